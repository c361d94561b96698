"""MMS's host metrics collector, which its frontend runs as a new Python process every minute:
ours collects nothing. MMS's own reported the host's CPU, memory and disk use to a log that our
log config shows at DEBUG only; SageMaker reports those in CloudWatch itself."""
