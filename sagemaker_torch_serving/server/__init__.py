"""The serving process: reads the settings, prepares the model and MMS's configuration, starts
the backend and MMS's Java frontend, waits for the model, and stops everything on SIGTERM
(supervisor.py). Imports the handler path and the leaf modules, never backend/."""
