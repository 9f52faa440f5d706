"""The sans-I/O OCPP-J 1.6 core (room: protocol): frame codec, message types, error codes.

Bytes in, typed messages and bytes out; no sockets, no event loop, no logging. The modules:

* ``evgate.protocol.frames``: decode and encode CALL, CALLRESULT and CALLERROR frames, and
  the CALLERROR for any failure (``error_frame_for``).
* ``evgate.protocol.endpoint``: one side of a connection (central system or charger): unique
  ids, the one outstanding CALL, reply matching; ``receive`` turns a frame into a typed
  happening. The gateway and the fleet simulator both use it.
* ``evgate.protocol.v16``: the payload Structs of the 39 OCPP 1.6J actions (security
  extension included), their enums and ``ACTIONS``, the table of actions.
* ``evgate.protocol.errors``: ``ErrorCode``, ``OcppError`` and its subclasses, ``Violation``.
* ``evgate.protocol.validation``: the per-type payload codec, the schema rules a type cannot
  state, and lenient mode.

A CSMS reads a frame like this::

    endpoint = Endpoint(Role.central_system, lenient=charger.lenient)  # per connection
    happening = endpoint.receive(data)
    if isinstance(happening, IncomingCall):
        ...  # handle happening.request
        send(endpoint.respond(happening.unique_id, response))
    elif isinstance(happening, Refusal):
        send(happening.data)
"""
