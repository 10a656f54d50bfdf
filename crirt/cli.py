"""Command line: argv → Config → app. No logic here."""

from __future__ import annotations

import argparse
import asyncio
import sys

from crirt import __version__, config
from crirt.image import cli as image_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crirt", description="A Kubernetes CRI runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the CRI on a unix socket")
    config.add_flags(serve)
    sub.add_parser("version", help="print the version")
    image = sub.add_parser("image", help="pull, list, inspect, copy, mount and remove images")
    config.add_flags(image)
    image_cli.add_subcommands(image)
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"crirt {__version__}")
        return 0
    from crirt import app
    from crirt.errors import CrirtError

    flags = {
        k: v
        for k, v in vars(args).items()
        if k not in ("command", "config") and not k.startswith("cli_")
    }
    try:
        cfg = config.load(args.config, flags)
    except CrirtError as exc:
        print(f"crirt: {exc}", file=sys.stderr)
        return 2
    if args.command == "image":
        return image_cli.main(cfg, args)
    try:
        return asyncio.run(app.serve(cfg))
    except CrirtError as exc:
        # A configuration that cannot work (registries.conf, a runtime handler, the cgroup
        # driver) is found while starting: one clear line for the operator, not a traceback.
        print(f"crirt: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
