"""The handler path: the user's ``inference.py`` and the defaults, from request bytes to answer
bytes. It runs wherever a model is served (a backend worker, an in-process tool) and imports
nothing from ``server/`` or ``backend/``; see docs/architecture.md."""
