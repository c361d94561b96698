"""The backend worker processes MMS talks to: the prestarted backend and its handover
(process.py), the forked workers (worker.py), MMS's frame protocol (protocol.py) and the
program MMS runs (mms_home/). Imports the handler path and the leaf modules, never server/."""
