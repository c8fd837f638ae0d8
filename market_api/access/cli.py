"""``make api-key NAME=``, ``make api-keys``, ``make api-key-revoke NAME=``: the key store the
API of this environment reads (``MARKET_POSTGRES_URL`` set: PostgreSQL, else the data home)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from market_api.access.keys import AccessError
from market_api.access.stores import KeyStore, open_key_store
from market_core.env import SettingsError
from market_core.home import DataHome


def create(store: KeyStore, name: str) -> None:
    key = store.create(name)
    print(f"API key {name!r} created. It is shown this once and stored only as a hash;")
    print("send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>':")
    print(key)


def show(store: KeyStore) -> None:
    records = store.records()
    if not records:
        print("no API keys; make api-key NAME=<name> creates one")
        return
    width = max(len("name"), *(len(r.name) for r in records))
    print(f"{'name':<{width}}  {'prefix':<11}  {'created (UTC)':<25}  last used (UTC)")
    for r in records:
        used = "never" if r.last_used_at is None else r.last_used_at.isoformat()
        print(f"{r.name:<{width}}  mk_{r.lookup}  {r.created_at.isoformat():<25}  {used}")


def revoke(store: KeyStore, name: str) -> int:
    if not store.revoke(name):
        print(f"no active API key is named {name!r}; make api-keys lists them", file=sys.stderr)
        return 1
    print(f"API key {name!r} revoked: every API replica refuses it within 5 s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m market_api.access.cli", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("create", "revoke"):
        commands.add_parser(command).add_argument("name", help="the key's name (NAME=)")
    commands.add_parser("list")
    args = parser.parse_args(argv)
    if args.command in ("create", "revoke") and not args.name.strip():
        target = "api-key-revoke" if args.command == "revoke" else "api-key"
        parser.exit(2, f"NAME is required: make {target} NAME=<name>\n")
    try:
        store = open_key_store(DataHome.from_env())
        try:
            if args.command == "create":
                create(store, args.name.strip())
            elif args.command == "revoke":
                return revoke(store, args.name.strip())
            else:
                show(store)
        finally:
            store.close()
    except (AccessError, SettingsError) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
