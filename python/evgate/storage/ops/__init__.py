"""storage room: the group-commit writer's ops, one module per table family.

A handler never builds an op nor knows a column order: it calls a function of one of these
modules with a typed item (a msgspec Struct, or a typed row) and gets a typed
:class:`~evgate.storage.ops.base.Write`, whose result it reads back by the write itself
(:class:`~evgate.storage.ops.base.Results`), never by position.

* ``base``: the op base classes (``WriteOp``, ``CopyRows``, ``Statement``, ``FetchEach``), the
  typed ``Write`` and its ``Results``, and ``write_grouped`` (a batch's writes grouped by op,
  used by the writer and by EMIT alike).
* ``outbox``: the outbox rows and EMIT, the op that writes state with its events.
* ``transactions``, ``connectors``, ``chargers``, ``charger_messages``, ``meter_values``,
  ``cdrs``, ``sequences``, ``certificates`` (``signed_certificates``): the ops of those tables
  (and sequences).
* ``stops``: what a closed transaction writes after its stop (price, CDR, events), for a
  charger's StopTransaction and the operator's stop alike.
"""
