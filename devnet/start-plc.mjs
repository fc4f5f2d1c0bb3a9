// Starts a real PLC directory (@did-plc/server, in-memory database) on 127.0.0.1.
// Usage: node start-plc.mjs --port PORT. Prints one JSON line {"ready": true, ...} once listening.
import './loopback.mjs'
import { parseArgs } from 'node:util'
import plc from '@did-plc/server'

const { values } = parseArgs({ options: { port: { type: 'string' } } })
const port = Number(values.port)
if (!Number.isInteger(port) || port <= 0) {
  console.error('start-plc: --port PORT is required')
  process.exit(2)
}

const server = plc.PlcServer.create({ db: plc.Database.mock(), port })
try {
  await server.start()
} catch (err) {
  console.error(`start-plc: cannot listen on port ${port}: ${err.code ?? err.message}`)
  process.exit(err.code === 'EADDRINUSE' ? 98 : 1)
}
console.log(JSON.stringify({ ready: true, service: 'plc', url: `http://localhost:${port}`, pid: process.pid }))

const stop = async () => {
  await server.destroy().catch(() => {})
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
