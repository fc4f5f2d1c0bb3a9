"""The local test world: a real PLC and PDSes on loopback, a small AppView, a fault proxy, the synthetic corpus
and its seeding, the tiny tokenizer and model. The pipeline never imports it; tests, benchmarks and the demo do."""
