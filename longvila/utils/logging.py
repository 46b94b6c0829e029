"""Logging: one prefix format (rank, level, wall time, elapsed) for every process."""

from __future__ import annotations

import logging
import sys
import time

_START = time.time()


class _Formatter(logging.Formatter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def format(self, record: logging.LogRecord) -> str:
        wall = time.strftime("%H:%M:%S", time.localtime(record.created))
        elapsed = record.created - _START
        return f"[rank{self.rank} {record.levelname[0]} {wall} +{elapsed:7.1f}s] {record.getMessage()}"


def init_logger(rank: int = 0, log_file: str | None = None, level: int = logging.INFO) -> logging.Logger:
    """Configure the 'longvila' logger once per process: console on rank 0, a file per rank if given."""
    logger = logging.getLogger("longvila")
    logger.handlers.clear()
    logger.setLevel(level)
    logger.propagate = False
    if rank == 0:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(_Formatter(rank))
        logger.addHandler(console)
    if log_file:
        fh = logging.FileHandler(log_file)
        fh.setFormatter(_Formatter(rank))
        logger.addHandler(fh)
    return logger


def get_logger() -> logging.Logger:
    return logging.getLogger("longvila")
