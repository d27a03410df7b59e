"""Bundling, local deployments and the Try-it panel."""
