"""The universe: ``/listings`` (what trades and traded) and ``/calendar`` (the NYSE sessions)."""
