// Starts a real PDS (@atproto/pds) on 127.0.0.1 against a PLC directory, with its data in a fresh directory.
// Usage: node start-pds.mjs --port PORT --plc-url http://localhost:P --data-dir DIR --handle-domain .test
// The admin password comes from the environment (PDS_ADMIN_PASSWORD), never from argv.
// Prints one JSON line {"ready": true, ...} once listening.
import './loopback.mjs'
import { randomBytes } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { PDS, envToCfg, envToSecrets } from '@atproto/pds'

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    'plc-url': { type: 'string' },
    'data-dir': { type: 'string' },
    'handle-domain': { type: 'string', default: '.test' },
  },
})
const port = Number(values.port)
const adminPassword = process.env.PDS_ADMIN_PASSWORD
if (!Number.isInteger(port) || !values['plc-url'] || !values['data-dir'] || !adminPassword) {
  console.error('start-pds: --port, --plc-url, --data-dir and env PDS_ADMIN_PASSWORD are required')
  process.exit(2)
}

const dataDir = path.resolve(values['data-dir'])
mkdirSync(path.join(dataDir, 'blobs'), { recursive: true })
const env = {
  port,
  hostname: 'localhost',
  devMode: true,
  dataDirectory: dataDir,
  blobstoreDiskLocation: path.join(dataDir, 'blobs'),
  didPlcUrl: values['plc-url'],
  serviceHandleDomains: [values['handle-domain']],
  inviteRequired: false,
  rateLimitsEnabled: false,
  disableSsrfProtection: true,
  crawlers: [],
  jwtSecret: randomBytes(32).toString('hex'),
  adminPassword,
  plcRotationKeyK256PrivateKeyHex: randomBytes(32).toString('hex'),
}

let server
try {
  server = await PDS.create(envToCfg(env), envToSecrets(env))
  await server.start()
} catch (err) {
  console.error(`start-pds: cannot start on port ${port}: ${err.code ?? ''} ${err.stack ?? err}`)
  process.exit(err.code === 'EADDRINUSE' ? 98 : 1)
}
console.log(JSON.stringify({ ready: true, service: 'pds', url: `http://localhost:${port}`, pid: process.pid }))

const stop = async () => {
  await server.destroy().catch(() => {})
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
