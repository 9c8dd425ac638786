"""The benchmark: ceilings, hot paths under load, metrics over a generated data set, memory.

    python bench/run.py [--quick]        (make bench, make bench-quick)

In one run, with one set of server settings (uvicorn, uvloop, httptools, no access log):
  - pgbench doing single-row INSERTs into a click-shaped table: the database ceiling;
  - a bare FastAPI app answering a constant (bench/bare_app.py): the framework ceiling,
    with 1 and with 2 workers;
  - the service with 1 and with 2 workers under wrk (64 connections): POST /v1/clicks,
    GET /r/{code} and POST /v1/conversions, codes drawn with Zipf-skewed popularity;
    after each run the 2xx answers are checked against the rows stored;
  - scale out: 1 and 2 replicas (separate service processes of 1 worker each, on their own
    ports) behind a local HAProxy, under the same load, with the CPU shares of the service,
    Postgres, wrk, HAProxy and other processes;
  - every ceiling and every scenario three times; the report shows the medians, latest.json
    keeps each run;
  - the metrics endpoints over the generated data set (bench/dataset/), timed against the
    same numbers recounted from the raw tables;
  - the RSS of every worker during the load runs.
Results: bench/results/latest.json and latest.md (metrics.json and metrics.md for
`--only metrics`); server logs of the run in bench/results/logs/.

Only the database `referral_bench` on 127.0.0.1:5432 is used (created and migrated when
missing; REFERRAL_BENCH_DATABASE names another); nothing listens beyond the loopback, and
every wait has a bound.

By concern:
  config.py      the environment (paths, database, server settings) and the options (Config)
  main.py        one run, phase by phase
  machine.py     tools, how busy the box is, what it is
  database.py    the bench database and the monitor session the checks run on
  dataset/       the metrics data set: generated rows, loaded by COPY (also bench/generate.py)
  scenarios.py   the load scenarios and their seed (programs, rules, keys, codes)
  server.py      uvicorn processes under load
  balancer.py    replicas behind HAProxy: the generated config, the health checks
  runners.py     wrk and pgbench runs: throughput, latency, stored-vs-answered checks
  sampling.py    RSS and CPU of processes, from /proc
  medians.py     several runs of one measurement into one row of medians
  metrics.py     the metrics endpoints timed and checked against a raw recount
  targets.py     the targets and the verdicts
  report.py      latest.md / metrics.md, and the JSON beside them
"""
