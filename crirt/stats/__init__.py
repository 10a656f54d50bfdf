"""Container and pod stats from cgroup files, and their cAdvisor-compatible metric names."""

from crirt.stats.collector import StatsCollector
from crirt.stats.service import StatsService

__all__ = ["StatsCollector", "StatsService"]
