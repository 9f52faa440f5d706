"""loadmgmt room: load management — circuits of chargers under breakers, and the pure,
synchronous decisions of the smart-charging engine (``allocator``: who gets how many amps;
``control``: which SetChargingProfile to send when, so that no breaker is ever over, also
while limits change). No I/O here: ``app.py`` wires the engine's pushes to the chargers
(``handlers/smart_charging.py``).
"""
