"""The worker's metrics and logging flags (``--metrics-port``, ``--metrics-host``,
``--log-format``) and how ``jobq worker`` applies them.

Metrics of many processes: the supervisor serves ``--metrics-port`` itself and gives its worker
processes a directory in ``$PROMETHEUS_MULTIPROC_DIR`` to write their counters to; a scrape
sums them (see :mod:`jobq.metrics`). One port per host, however many processes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator

from jobq import metrics
from jobq.cli.arguments import positive_int_arg
from jobq.logs import LOG_FORMATS, make_handler

log = logging.getLogger("jobq.worker")


def add_worker_flags(w: argparse.ArgumentParser) -> None:
    """Add the metrics and log-format flags to the ``worker`` parser."""
    w.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text (default), or json: one JSON object per line; lines about a job carry "
        "job_id, task, queue and attempt either way",
    )
    w.add_argument(
        "--metrics-port",
        type=positive_int_arg,
        metavar="PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (summed over every worker "
        "process; default: no metrics endpoint)",
    )
    w.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address for --metrics-port (default: 127.0.0.1; 0.0.0.0 for every interface)",
    )


def log_handler(args: argparse.Namespace) -> logging.Handler:
    """The stderr handler for the worker's ``--log-format``."""
    return make_handler(sys.stderr, args.log_format)


def child_args(args: argparse.Namespace) -> list[str]:
    """The flags a worker process gets from these (the supervisor serves the metrics)."""
    return [f"--log-format={args.log_format}"]


@contextlib.contextmanager
def supervisor_metrics(args: argparse.Namespace) -> Iterator[None]:
    """With ``--metrics-port``: a fresh multiprocess directory for the worker processes started
    inside the block, and their summed metrics served on the port until it ends."""
    if args.metrics_port is None:
        yield
        return
    metrics.check_metrics_port(args.metrics_port)
    with metrics.multiprocess_dir() as path:
        stop = metrics.serve(
            args.metrics_port, args.metrics_host, metrics.multiprocess_registry(path)
        )
        log.info(
            "serving Prometheus metrics on http://%s:%d/metrics",
            args.metrics_host,
            args.metrics_port,
        )
        try:
            yield
        finally:
            stop()
