"""Load generator and benchmark for chat/1 servers: `python -m bench --help`.

Modules:
- bench.stats: pure helpers (percentiles, fixed-rate schedule, line counting).
- bench.net: many non-blocking clients on one epoll loop, barriers.
- bench.serverproc: starting the reference server; /proc memory and CPU.
- bench.scenarios: fan-out, latency, connections, slow-consumer.
- bench.floor: send-floor, what N send() calls cost here with no server at all.
- bench.report: tables, JSON, optional latency plot.
"""
