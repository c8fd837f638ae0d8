"""Serving beyond loopback (issue 21): what an API key check costs a cache hit, and what a
second granian worker buys on this two-core machine.

1. Hits with auth on against auth off and the hello-world floor, each server pinned to one
   core and wrk to the other, as ``bench/api.py``'s hit benchmark does (goal: auth-on hits
   >= 0.8x the floor's req/s at 50 connections).
2. Hits on one worker against two, neither pinned: with two workers the server may use both
   cores, but wrk then shares them, so this measures the machine, not a worker alone.
"""

from __future__ import annotations

from bench import load, servers
from bench.api import _add_runs, api_home, hot_paths, warm
from bench.datagen import DataSet
from bench.harness import Goal, Result, ratios
from bench.servers import Server
from market_api.access.stores import FILE_NAME, FileKeyStore

CONNECTIONS = 50


def _workers(server: Server, count: int) -> Server:
    argv = list(server.argv)
    argv[argv.index("--workers") + 1] = str(count)
    return Server(f"{server.name} x{count}", argv, server.env, server.port, cpu=None)


def serving(symbols: int, reps: int, seconds: float) -> Result:
    load.require_wrk()
    data = DataSet(symbols)
    home = api_home(data)
    store = FileKeyStore(home / "state" / FILE_NAME)
    store.revoke("bench")
    key = store.create("bench")
    store.close()
    hot = hot_paths(data)
    off = servers.ours(home)
    on = servers.ours(home, MARKET_API_AUTH="required")
    on.name, off.name = "auth on", "auth off"
    floor = servers.floor()
    keyed = [f"X-API-Key: {key}"]
    plan = [(on, hot, keyed), (off, hot, []), (floor, ["/"], [])]
    paths = {s.name: load.write_paths(f"serving-{s.name.replace(' ', '-')}", p) for s, p, _ in plan}
    runs: dict[str, list[load.Run]] = {}
    with servers.running(on, off, floor):
        for server, asked, headers in plan:
            if not headers:
                warm(server, asked)
            load.wrk(server.url, paths[server.name], CONNECTIONS, 1.0, headers)
        for rep in range(reps):
            for server, _, headers in plan:
                run = load.wrk(server.url, paths[server.name], CONNECTIONS, seconds, headers)
                runs.setdefault(server.name, []).append(run)
            print(f"  rep {rep + 1}/{reps}: " + ", ".join(
                f"{name} {r[-1].rps:,.0f} req/s" for name, r in runs.items()))  # fmt: skip
    one, two = _workers(servers.ours(home), 1), _workers(servers.ours(home), 2)
    with servers.running(one, two):
        for server in (one, two):
            load.wrk(server.url, paths["auth off"], CONNECTIONS, 1.0)
        for rep in range(reps):
            for server in (one, two):
                run = load.wrk(server.url, paths["auth off"], CONNECTIONS, seconds)
                runs.setdefault(server.name, []).append(run)
            print(f"  rep {rep + 1}/{reps}: " + ", ".join(
                f"{s.name} {runs[s.name][-1].rps:,.0f} req/s" for s in (one, two)))  # fmt: skip
    result = Result("serving", "API: auth on hits, and two workers (issue 21)")
    for name, measured in runs.items():
        _add_runs(result, f"{name} @{CONNECTIONS}", measured)

    def rps(name: str) -> list[float]:
        return [r.rps for r in runs[name]]

    result.add("ratio auth on/floor req/s", "x", ratios(rps("auth on"), rps("floor")))
    result.add("ratio auth on/auth off req/s", "x", ratios(rps("auth on"), rps("auth off")))
    result.add("ratio auth off/floor req/s", "x", ratios(rps("auth off"), rps("floor")))
    result.add("ratio 2 workers/1 req/s", "x", ratios(rps(two.name), rps(one.name)))
    result.params = {"symbols": symbols, "seconds_per_run": seconds, "connections": CONNECTIONS,
                     "hot_paths": len(hot)}  # fmt: skip
    result.goals = [
        Goal("Cache hit with auth on at 50 connections >= 80 % of the floor's req/s",
             "ratio auth on/floor req/s", ">=", 0.8),
    ]  # fmt: skip
    result.notes = [
        "auth on: `make api` with MARKET_API_AUTH=required, every request carrying X-API-Key "
        "(a SHA-256 and a constant-time comparison per hit); auth off: the same server without "
        "it; floor: the Litestar hello-world on the same granian command. Each pinned to one "
        "core, wrk to the other.",
        "Workers: the same auth-off server with --workers 1 and --workers 2, unpinned, wrk on "
        "the same two cores (this machine has two): a second worker competes with wrk.",
    ]
    return result
