"""Draw a campaign run as the two-panel campaign figure, from its checkpoint file.

Top: one row per workflow instance, bars coloured by workflow type and
labelled with the resource each task was given, with the campaign's
configuration (workflow types, counts, cpus, gpus, priorities, dependencies)
beside it. Bottom: GPU (left axis) and CPU (right axis) busy slots as step
functions over the run, with the capacities as dashed lines. It reuses the
dashboard's figure builder, so it draws exactly what ``asyncflow dashboard``
shows.

Run it after the campaign example (needs the ``dashboard`` extra)::

    python examples/01-workflow_grouping.py --out campaign-run
    python examples/plot_campaign.py campaign-run -o campaign.html

It writes HTML, and also PNG (``--png``) when a static image engine
(``kaleido``) is installed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asyncflow.dashboard import SourceError, open_source
from asyncflow.dashboard.figures import campaign_figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw a campaign run's timeline and slots.")
    parser.add_argument("run", type=Path, help="a checkpoint file or a directory of them")
    parser.add_argument("-o", "--output", type=Path, default=Path("campaign.html"))
    parser.add_argument("--png", type=Path, help="also write this PNG (needs kaleido)")
    parser.add_argument("--gpus", type=int, help="GPU capacity, when the run recorded none")
    parser.add_argument("--cpus", type=int, help="CPU capacity, when the run recorded none")
    args = parser.parse_args(argv)
    if not args.run.exists():
        parser.error(f"{args.run}: no such file or directory")
    try:
        run = open_source(args.run).poll()
    except SourceError as exc:
        print(f"plot_campaign: {exc}", file=sys.stderr)
        return 1
    capacity = {k: v for k, v in (("gpu", args.gpus), ("cpu", args.cpus)) if v}
    figure = campaign_figure(run, capacity=capacity)
    figure.write_html(args.output, include_plotlyjs=True)
    print(f"wrote {args.output}")
    if args.png:
        try:
            figure.write_image(args.png, width=1600, height=1000)
        except (ImportError, ValueError, RuntimeError) as exc:
            print(f"no PNG: a static image engine is needed ({exc})", file=sys.stderr)
        else:
            print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
