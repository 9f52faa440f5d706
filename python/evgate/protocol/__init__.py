"""The sans-I/O OCPP-J 1.6 core (room: protocol): frame codec, message types, error codes.

Bytes in, typed messages and bytes out; no sockets, no event loop, no logging. The modules:

* ``evgate.protocol.frames``: decode and encode CALL, CALLRESULT and CALLERROR frames, and
  the CALLERROR for any failure (``error_frame_for``).
* ``evgate.protocol.v16``: the payload Structs of the 39 OCPP 1.6J actions (security
  extension included), their enums and ``ACTIONS``, the table of actions.
* ``evgate.protocol.errors``: ``ErrorCode``, ``OcppError`` and its subclasses, ``Violation``.
* ``evgate.protocol.validation``: the per-type payload codec, the schema rules a type cannot
  state, and lenient mode.

A CSMS reads a frame like this::

    frame = frames.decode(data)
    if isinstance(frame, frames.Call):
        request, violations = frames.decode_request(frame, lenient=charger.lenient)
        ...
        reply = frames.encode_result(frame.unique_id, response)
"""
