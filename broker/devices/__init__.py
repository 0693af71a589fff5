"""The device simulator shipped with the broker (``rsbroker devices``).

:mod:`~broker.devices.wire` is one device (RSocket over WebSocket on one asyncio protocol,
registering ``device.<id>``); :mod:`~broker.devices.fleet` holds the devices of one worker
process; :mod:`~broker.devices.cli` spreads a fleet over worker processes, follows them and
prints the JSON summary.
"""
