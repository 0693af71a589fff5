"""The device simulator shipped with the broker (``rsbroker devices``).

:mod:`~broker.devices.fleet` holds the devices of one worker process (each a cluster
client registering ``device.<id>``); :mod:`~broker.devices.cli` spreads a fleet over
worker processes, follows them and prints the JSON summary.
"""
