"""Deploy targets behind one :class:`~modeldeck.core.targets.base.Target` protocol."""
