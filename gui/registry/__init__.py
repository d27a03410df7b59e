"""Registry browser: model list, versions, details, compare, promotion."""
