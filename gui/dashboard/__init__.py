"""Live health dashboards: the fleet overview and the detail plots (pyqtgraph), fed by ``core.monitor``."""
