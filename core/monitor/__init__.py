"""Live health monitoring of deployments, without Qt.

``scrape`` fetches and parses a ``/metrics`` page, ``derive`` turns two scrapes
into rates, percentiles and events, ``series`` keeps bounded ring buffers,
``health`` applies the user's rules, ``collector`` scrapes many endpoints on an
interval for a dashboard to drain, and ``prometheus`` does the same through a
Prometheus server (plus file_sd targets and a Grafana dashboard).
"""
