"""The OCPP 1.6J action table (room: protocol): each action's types and direction.

``ACTIONS`` is the explicit routing table the codec (and the gateway's handler registry) is
built from: 28 core actions and the 11 of the security extension, 39 in all, matching the
schema files shipped in the ``ocpp`` package.
"""

from __future__ import annotations

from enum import Flag
from typing import Final

import msgspec

from evgate.protocol.v16.messages import (
    AuthorizeRequest,
    AuthorizeResponse,
    BootNotificationRequest,
    BootNotificationResponse,
    CancelReservationRequest,
    CancelReservationResponse,
    CertificateSignedRequest,
    CertificateSignedResponse,
    ChangeAvailabilityRequest,
    ChangeAvailabilityResponse,
    ChangeConfigurationRequest,
    ChangeConfigurationResponse,
    ClearCacheRequest,
    ClearCacheResponse,
    ClearChargingProfileRequest,
    ClearChargingProfileResponse,
    DataTransferRequest,
    DataTransferResponse,
    DeleteCertificateRequest,
    DeleteCertificateResponse,
    DiagnosticsStatusNotificationRequest,
    DiagnosticsStatusNotificationResponse,
    ExtendedTriggerMessageRequest,
    ExtendedTriggerMessageResponse,
    FirmwareStatusNotificationRequest,
    FirmwareStatusNotificationResponse,
    GetCompositeScheduleRequest,
    GetCompositeScheduleResponse,
    GetConfigurationRequest,
    GetConfigurationResponse,
    GetDiagnosticsRequest,
    GetDiagnosticsResponse,
    GetInstalledCertificateIdsRequest,
    GetInstalledCertificateIdsResponse,
    GetLocalListVersionRequest,
    GetLocalListVersionResponse,
    GetLogRequest,
    GetLogResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    InstallCertificateRequest,
    InstallCertificateResponse,
    LogStatusNotificationRequest,
    LogStatusNotificationResponse,
    Message,
    MeterValuesRequest,
    MeterValuesResponse,
    RemoteStartTransactionRequest,
    RemoteStartTransactionResponse,
    RemoteStopTransactionRequest,
    RemoteStopTransactionResponse,
    ReserveNowRequest,
    ReserveNowResponse,
    ResetRequest,
    ResetResponse,
    SecurityEventNotificationRequest,
    SecurityEventNotificationResponse,
    SendLocalListRequest,
    SendLocalListResponse,
    SetChargingProfileRequest,
    SetChargingProfileResponse,
    SignCertificateRequest,
    SignCertificateResponse,
    SignedFirmwareStatusNotificationRequest,
    SignedFirmwareStatusNotificationResponse,
    SignedUpdateFirmwareRequest,
    SignedUpdateFirmwareResponse,
    StartTransactionRequest,
    StartTransactionResponse,
    StatusNotificationRequest,
    StatusNotificationResponse,
    StopTransactionRequest,
    StopTransactionResponse,
    TriggerMessageRequest,
    TriggerMessageResponse,
    UnlockConnectorRequest,
    UnlockConnectorResponse,
    UpdateFirmwareRequest,
    UpdateFirmwareResponse,
)


class Direction(Flag):
    """Who sends an action's CALL. DataTransfer goes both ways."""

    #: Sent by the charger, answered by the CSMS (BootNotification, MeterValues, ...).
    charger_to_csms = 1
    #: Sent by the CSMS, answered by the charger (RemoteStartTransaction, Reset, ...).
    csms_to_charger = 2
    #: Either side may send it (DataTransfer).
    both = charger_to_csms | csms_to_charger


_FROM_CHARGER = Direction.charger_to_csms
_FROM_CSMS = Direction.csms_to_charger
_EITHER = Direction.both


class ActionSpec(msgspec.Struct, frozen=True):
    """An OCPP action: its wire name, payload types and who sends the CALL."""

    name: str
    request: type[Message]
    response: type[Message]
    direction: Direction


def _spec(
    name: str, request: type[Message], response: type[Message], direction: Direction
) -> tuple[str, ActionSpec]:
    return name, ActionSpec(name, request, response, direction)


#: Every OCPP 1.6J action by wire name.
ACTIONS: Final[dict[str, ActionSpec]] = dict(
    [
        # Core profile and the other 1.6 feature profiles.
        _spec("Authorize", AuthorizeRequest, AuthorizeResponse, _FROM_CHARGER),
        _spec("BootNotification", BootNotificationRequest, BootNotificationResponse, _FROM_CHARGER),
        _spec(
            "CancelReservation",
            CancelReservationRequest,
            CancelReservationResponse,
            _FROM_CSMS,
        ),
        _spec(
            "ChangeAvailability",
            ChangeAvailabilityRequest,
            ChangeAvailabilityResponse,
            _FROM_CSMS,
        ),
        _spec(
            "ChangeConfiguration",
            ChangeConfigurationRequest,
            ChangeConfigurationResponse,
            _FROM_CSMS,
        ),
        _spec("ClearCache", ClearCacheRequest, ClearCacheResponse, _FROM_CSMS),
        _spec(
            "ClearChargingProfile",
            ClearChargingProfileRequest,
            ClearChargingProfileResponse,
            _FROM_CSMS,
        ),
        _spec("DataTransfer", DataTransferRequest, DataTransferResponse, _EITHER),
        _spec(
            "DiagnosticsStatusNotification",
            DiagnosticsStatusNotificationRequest,
            DiagnosticsStatusNotificationResponse,
            _FROM_CHARGER,
        ),
        _spec(
            "FirmwareStatusNotification",
            FirmwareStatusNotificationRequest,
            FirmwareStatusNotificationResponse,
            _FROM_CHARGER,
        ),
        _spec(
            "GetCompositeSchedule",
            GetCompositeScheduleRequest,
            GetCompositeScheduleResponse,
            _FROM_CSMS,
        ),
        _spec("GetConfiguration", GetConfigurationRequest, GetConfigurationResponse, _FROM_CSMS),
        _spec("GetDiagnostics", GetDiagnosticsRequest, GetDiagnosticsResponse, _FROM_CSMS),
        _spec(
            "GetLocalListVersion",
            GetLocalListVersionRequest,
            GetLocalListVersionResponse,
            _FROM_CSMS,
        ),
        _spec("Heartbeat", HeartbeatRequest, HeartbeatResponse, _FROM_CHARGER),
        _spec("MeterValues", MeterValuesRequest, MeterValuesResponse, _FROM_CHARGER),
        _spec(
            "RemoteStartTransaction",
            RemoteStartTransactionRequest,
            RemoteStartTransactionResponse,
            _FROM_CSMS,
        ),
        _spec(
            "RemoteStopTransaction",
            RemoteStopTransactionRequest,
            RemoteStopTransactionResponse,
            _FROM_CSMS,
        ),
        _spec("ReserveNow", ReserveNowRequest, ReserveNowResponse, _FROM_CSMS),
        _spec("Reset", ResetRequest, ResetResponse, _FROM_CSMS),
        _spec("SendLocalList", SendLocalListRequest, SendLocalListResponse, _FROM_CSMS),
        _spec(
            "SetChargingProfile",
            SetChargingProfileRequest,
            SetChargingProfileResponse,
            _FROM_CSMS,
        ),
        _spec("StartTransaction", StartTransactionRequest, StartTransactionResponse, _FROM_CHARGER),
        _spec(
            "StatusNotification",
            StatusNotificationRequest,
            StatusNotificationResponse,
            _FROM_CHARGER,
        ),
        _spec("StopTransaction", StopTransactionRequest, StopTransactionResponse, _FROM_CHARGER),
        _spec("TriggerMessage", TriggerMessageRequest, TriggerMessageResponse, _FROM_CSMS),
        _spec("UnlockConnector", UnlockConnectorRequest, UnlockConnectorResponse, _FROM_CSMS),
        _spec("UpdateFirmware", UpdateFirmwareRequest, UpdateFirmwareResponse, _FROM_CSMS),
        # Security extension (OCPP 1.6 security whitepaper, edition 3).
        _spec(
            "CertificateSigned",
            CertificateSignedRequest,
            CertificateSignedResponse,
            _FROM_CSMS,
        ),
        _spec(
            "DeleteCertificate",
            DeleteCertificateRequest,
            DeleteCertificateResponse,
            _FROM_CSMS,
        ),
        _spec(
            "ExtendedTriggerMessage",
            ExtendedTriggerMessageRequest,
            ExtendedTriggerMessageResponse,
            _FROM_CSMS,
        ),
        _spec(
            "GetInstalledCertificateIds",
            GetInstalledCertificateIdsRequest,
            GetInstalledCertificateIdsResponse,
            _FROM_CSMS,
        ),
        _spec("GetLog", GetLogRequest, GetLogResponse, _FROM_CSMS),
        _spec(
            "InstallCertificate",
            InstallCertificateRequest,
            InstallCertificateResponse,
            _FROM_CSMS,
        ),
        _spec(
            "LogStatusNotification",
            LogStatusNotificationRequest,
            LogStatusNotificationResponse,
            _FROM_CHARGER,
        ),
        _spec(
            "SecurityEventNotification",
            SecurityEventNotificationRequest,
            SecurityEventNotificationResponse,
            _FROM_CHARGER,
        ),
        _spec("SignCertificate", SignCertificateRequest, SignCertificateResponse, _FROM_CHARGER),
        _spec(
            "SignedFirmwareStatusNotification",
            SignedFirmwareStatusNotificationRequest,
            SignedFirmwareStatusNotificationResponse,
            _FROM_CHARGER,
        ),
        _spec(
            "SignedUpdateFirmware",
            SignedUpdateFirmwareRequest,
            SignedUpdateFirmwareResponse,
            _FROM_CSMS,
        ),
    ]
)


#: The action whose payload types these are, for encoding a CALL from a request alone.
ACTION_OF_REQUEST: Final[dict[type[Message], str]] = {s.request: s.name for s in ACTIONS.values()}
