"""Monitoring a served model: its request log against its training data (``taskfit monitor``).

:mod:`~taskfit.monitoring.requests` reads the log, :mod:`~taskfit.monitoring.drift` holds the
statistics, :mod:`~taskfit.monitoring.monitor` cuts windows and decides alerts, and
:mod:`~taskfit.monitoring.report` writes ``monitor.json`` and ``monitor.html``.
"""

from taskfit.monitoring.monitor import ALERT_EXIT_CODE, MonitorResult, monitor_project

__all__ = ["ALERT_EXIT_CODE", "MonitorResult", "monitor_project"]
