"""OCPP 1.6J payload types (room: protocol): one request and one response Struct per action.

These Structs are the single source of truth for what goes over the wire: the codec in
``evgate.protocol.frames`` decodes into them and encodes them, handlers read and build them,
and the API's OpenAPI document can be generated from them.

Naming: Python attributes are snake_case and ``rename="camel"`` maps them to the exact wire
names (``charge_point_vendor`` is ``chargePointVendor`` on the wire); the mapping is checked
against every official schema by ``tests/protocol/test_schema_drift.py``.

Absent optional fields are ``msgspec.UNSET`` and are left out of the encoded JSON
(``omit_defaults=True``); ``null`` is never written, and a ``null`` received for an optional
field is a type error, as the schemas say (lenient mode drops it and reports it).

What the types check while msgspec decodes: required fields, JSON types, enum values,
``maxLength`` (the ``CiString20`` ... aliases), ``minItems``, RFC 3339 date-times with a zone
(``DateTime``) and unknown fields (``forbid_unknown_fields=True``). The few schema rules a type
cannot state (``multipleOf 0.1``, StopTransaction's unit list without ``Hertz``, MeterValues'
non-empty ``sampledValue``, and date-time spellings msgspec accepts beyond RFC 3339) are
checked right after decoding by ``evgate.protocol.validation``.

Building a message::

    BootNotificationResponse(
        status=RegistrationStatus.accepted,
        current_time=datetime.now(UTC),
        interval=300,
    )

Build date-times timezone-aware: msgspec writes a naive datetime without an offset, which the
schemas (and chargers) reject.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

from evgate.protocol.v16.enums import (
    AuthorizationStatus,
    AvailabilityStatus,
    AvailabilityType,
    CancelReservationStatus,
    CertificateSignedStatus,
    CertificateUse,
    ChargePointErrorCode,
    ChargePointStatus,
    ChargingProfileKindType,
    ChargingProfilePurposeType,
    ChargingProfileStatus,
    ChargingRateUnitType,
    ClearCacheStatus,
    ClearChargingProfileStatus,
    ConfigurationStatus,
    DataTransferStatus,
    DeleteCertificateStatus,
    DiagnosticsStatus,
    ExtendedMessageTrigger,
    FirmwareStatus,
    GenericStatus,
    GetCompositeScheduleStatus,
    GetInstalledCertificateStatus,
    HashAlgorithm,
    InstallCertificateStatus,
    Location,
    LogStatus,
    LogType,
    Measurand,
    MessageTrigger,
    Phase,
    ReadingContext,
    Reason,
    RecurrencyKindType,
    RegistrationStatus,
    RemoteStartStopStatus,
    ReservationStatus,
    ResetStatus,
    ResetType,
    SignedFirmwareStatus,
    TriggerMessageStatus,
    UnitOfMeasure,
    UnlockStatus,
    UpdateFirmwareStatus,
    UpdateStatus,
    UpdateType,
    UploadLogStatus,
    ValueFormat,
)

__all__ = [
    "INT32_MAX",
    "AuthorizationData",
    "AuthorizeRequest",
    "AuthorizeResponse",
    "BootNotificationRequest",
    "BootNotificationResponse",
    "CancelReservationRequest",
    "CancelReservationResponse",
    "CertificateHashData",
    "CertificateSignedRequest",
    "CertificateSignedResponse",
    "ChangeAvailabilityRequest",
    "ChangeAvailabilityResponse",
    "ChangeConfigurationRequest",
    "ChangeConfigurationResponse",
    "ChargingProfile",
    "ChargingSchedule",
    "ChargingSchedulePeriod",
    "CiString20",
    "CiString25",
    "CiString50",
    "CiString255",
    "CiString500",
    "ClearCacheRequest",
    "ClearCacheResponse",
    "ClearChargingProfileRequest",
    "ClearChargingProfileResponse",
    "DataTransferRequest",
    "DataTransferResponse",
    "DateTime",
    "DeleteCertificateRequest",
    "DeleteCertificateResponse",
    "DiagnosticsStatusNotificationRequest",
    "DiagnosticsStatusNotificationResponse",
    "ExtendedTriggerMessageRequest",
    "ExtendedTriggerMessageResponse",
    "Firmware",
    "FirmwareStatusNotificationRequest",
    "FirmwareStatusNotificationResponse",
    "GetCompositeScheduleRequest",
    "GetCompositeScheduleResponse",
    "GetConfigurationRequest",
    "GetConfigurationResponse",
    "GetDiagnosticsRequest",
    "GetDiagnosticsResponse",
    "GetInstalledCertificateIdsRequest",
    "GetInstalledCertificateIdsResponse",
    "GetLocalListVersionRequest",
    "GetLocalListVersionResponse",
    "GetLogRequest",
    "GetLogResponse",
    "HeartbeatRequest",
    "HeartbeatResponse",
    "IdTagInfo",
    "InstallCertificateRequest",
    "InstallCertificateResponse",
    "KeyValue",
    "LogParameters",
    "LogStatusNotificationRequest",
    "LogStatusNotificationResponse",
    "Message",
    "MeterValue",
    "MeterValuesRequest",
    "MeterValuesResponse",
    "RemoteStartTransactionRequest",
    "RemoteStartTransactionResponse",
    "RemoteStopTransactionRequest",
    "RemoteStopTransactionResponse",
    "ReserveNowRequest",
    "ReserveNowResponse",
    "ResetRequest",
    "ResetResponse",
    "SampledValue",
    "SecurityEventNotificationRequest",
    "SecurityEventNotificationResponse",
    "SendLocalListRequest",
    "SendLocalListResponse",
    "SetChargingProfileRequest",
    "SetChargingProfileResponse",
    "SignCertificateRequest",
    "SignCertificateResponse",
    "SignedFirmwareStatusNotificationRequest",
    "SignedFirmwareStatusNotificationResponse",
    "SignedUpdateFirmwareRequest",
    "SignedUpdateFirmwareResponse",
    "StartTransactionRequest",
    "StartTransactionResponse",
    "StatusNotificationRequest",
    "StatusNotificationResponse",
    "StopTransactionRequest",
    "StopTransactionResponse",
    "String40",
    "String128",
    "String512",
    "String800",
    "String5500",
    "String10000",
    "TriggerMessageRequest",
    "TriggerMessageResponse",
    "UnlockConnectorRequest",
    "UnlockConnectorResponse",
    "UpdateFirmwareRequest",
    "UpdateFirmwareResponse",
]

# OCPP 1.6 string types ("CiString20Type" ...: case-insensitive for comparison, which is the
# business of whoever compares them) and the security extension's "string[0..N]".
CiString20 = Annotated[str, Meta(max_length=20)]
CiString25 = Annotated[str, Meta(max_length=25)]
CiString50 = Annotated[str, Meta(max_length=50)]
CiString255 = Annotated[str, Meta(max_length=255)]
CiString500 = Annotated[str, Meta(max_length=500)]
String40 = Annotated[str, Meta(max_length=40)]
String128 = Annotated[str, Meta(max_length=128)]
String512 = Annotated[str, Meta(max_length=512)]
String800 = Annotated[str, Meta(max_length=800)]
String5500 = Annotated[str, Meta(max_length=5500)]
String10000 = Annotated[str, Meta(max_length=10000)]

#: The largest OCPP 1.6 ``integer`` (32 bits, one of them the sign, says the specification):
#: the bound of connector and transaction ids, and of the PostgreSQL ``integer`` columns that
#: hold them and the API's ids and cursors of those columns.
INT32_MAX = 2**31 - 1

#: An RFC 3339 date-time with a zone offset; a naive one is refused while decoding.
DateTime = Annotated[datetime, Meta(tz=True)]


class Message(
    msgspec.Struct,
    rename="camel",
    omit_defaults=True,
    forbid_unknown_fields=True,
    kw_only=True,
    repr_omit_defaults=True,
    gc=False,
):
    """Base of every OCPP 1.6J payload and nested object type.

    Fields are declared in the order of the official schema's ``properties`` and msgspec
    encodes them in declaration order, so every message evgate sends has its members in the
    schema's order (charger firmware with naive parsers exists; ``tests/protocol/
    test_schema_order.py`` keeps the two in step). That puts required fields after optional
    ones, which msgspec allows only for keyword-only fields; ``kw_only`` applies to the fields
    a class declares itself, not to a subclass's, so each subclass repeats it.

    ``gc=False``: instances hold only strings, numbers, enums, datetimes and lists of other
    Messages, so they cannot form reference cycles, and skipping the cycle collector's
    tracking makes decoding cheaper on the hot path.
    """


# Objects nested in several payloads.


class IdTagInfo(Message, kw_only=True):
    """How the CSMS judges an id tag (Authorize, Start/StopTransaction, SendLocalList)."""

    expiry_date: DateTime | UnsetType = UNSET
    parent_id_tag: CiString20 | UnsetType = UNSET
    status: AuthorizationStatus


class AuthorizationData(Message, kw_only=True):
    """One entry of the local authorization list sent with SendLocalList.req."""

    id_tag: CiString20
    id_tag_info: IdTagInfo | UnsetType = UNSET


class SampledValue(Message, kw_only=True):
    """One measured value; ``value`` is a string on the wire, as OCPP defines it."""

    value: str
    context: ReadingContext | UnsetType = UNSET
    format: ValueFormat | UnsetType = UNSET
    measurand: Measurand | UnsetType = UNSET
    phase: Phase | UnsetType = UNSET
    location: Location | UnsetType = UNSET
    unit: UnitOfMeasure | UnsetType = UNSET


class MeterValue(Message, kw_only=True):
    """Sampled values taken at one instant.

    MeterValues.req requires at least one sampled value here, StopTransaction.req's
    ``transactionData`` does not: one type serves both and the MeterValues rule is checked after
    decoding (``evgate.protocol.validation``).
    """

    timestamp: DateTime
    sampled_value: list[SampledValue]


class ChargingSchedulePeriod(Message, kw_only=True):
    """One period of a charging schedule; ``limit`` has at most one decimal (multipleOf 0.1)."""

    start_period: int
    limit: float
    number_phases: int | UnsetType = UNSET


class ChargingSchedule(Message, kw_only=True):
    """A charging schedule; ``minChargingRate`` has at most one decimal (multipleOf 0.1)."""

    duration: int | UnsetType = UNSET
    start_schedule: DateTime | UnsetType = UNSET
    charging_rate_unit: ChargingRateUnitType
    charging_schedule_period: list[ChargingSchedulePeriod]
    min_charging_rate: float | UnsetType = UNSET


class ChargingProfile(Message, kw_only=True):
    """A charging profile (SetChargingProfile.req, RemoteStartTransaction.req)."""

    charging_profile_id: int
    transaction_id: int | UnsetType = UNSET
    stack_level: int
    charging_profile_purpose: ChargingProfilePurposeType
    charging_profile_kind: ChargingProfileKindType
    recurrency_kind: RecurrencyKindType | UnsetType = UNSET
    valid_from: DateTime | UnsetType = UNSET
    valid_to: DateTime | UnsetType = UNSET
    charging_schedule: ChargingSchedule


class KeyValue(Message, kw_only=True):
    """One configuration key reported in GetConfiguration.conf."""

    key: CiString50
    readonly: bool
    value: CiString500 | UnsetType = UNSET


class CertificateHashData(Message, kw_only=True):
    """Identifies a certificate by its issuer hashes and serial number (security extension)."""

    hash_algorithm: HashAlgorithm
    issuer_name_hash: String128
    issuer_key_hash: String128
    serial_number: String40


class LogParameters(Message, kw_only=True):
    """Where to upload a log and which period it covers (GetLog.req)."""

    remote_location: String512
    oldest_timestamp: DateTime | UnsetType = UNSET
    latest_timestamp: DateTime | UnsetType = UNSET


class Firmware(Message, kw_only=True):
    """A signed firmware image to install (SignedUpdateFirmware.req)."""

    location: String512
    retrieve_date_time: DateTime
    install_date_time: DateTime | UnsetType = UNSET
    signing_certificate: String5500
    signature: String800


# Payloads, one request and one response per action, in alphabetical order of action.


class AuthorizeRequest(Message, kw_only=True):
    """Authorize.req (charger → CSMS)."""

    id_tag: CiString20


class AuthorizeResponse(Message, kw_only=True):
    """Authorize.conf (CSMS → charger)."""

    id_tag_info: IdTagInfo


class BootNotificationRequest(Message, kw_only=True):
    """BootNotification.req (charger → CSMS)."""

    charge_point_vendor: CiString20
    charge_point_model: CiString20
    charge_point_serial_number: CiString25 | UnsetType = UNSET
    charge_box_serial_number: CiString25 | UnsetType = UNSET
    firmware_version: CiString50 | UnsetType = UNSET
    iccid: CiString20 | UnsetType = UNSET
    imsi: CiString20 | UnsetType = UNSET
    meter_type: CiString25 | UnsetType = UNSET
    meter_serial_number: CiString25 | UnsetType = UNSET


class BootNotificationResponse(Message, kw_only=True):
    """BootNotification.conf (CSMS → charger)."""

    status: RegistrationStatus
    current_time: DateTime
    interval: int


class CancelReservationRequest(Message, kw_only=True):
    """CancelReservation.req (CSMS → charger)."""

    reservation_id: int


class CancelReservationResponse(Message, kw_only=True):
    """CancelReservation.conf (charger → CSMS)."""

    status: CancelReservationStatus


class CertificateSignedRequest(Message, kw_only=True):
    """CertificateSigned.req (CSMS → charger)."""

    certificate_chain: String10000


class CertificateSignedResponse(Message, kw_only=True):
    """CertificateSigned.conf (charger → CSMS)."""

    status: CertificateSignedStatus


class ChangeAvailabilityRequest(Message, kw_only=True):
    """ChangeAvailability.req (CSMS → charger)."""

    connector_id: int
    type: AvailabilityType


class ChangeAvailabilityResponse(Message, kw_only=True):
    """ChangeAvailability.conf (charger → CSMS)."""

    status: AvailabilityStatus


class ChangeConfigurationRequest(Message, kw_only=True):
    """ChangeConfiguration.req (CSMS → charger)."""

    key: CiString50
    value: CiString500


class ChangeConfigurationResponse(Message, kw_only=True):
    """ChangeConfiguration.conf (charger → CSMS)."""

    status: ConfigurationStatus


class ClearCacheRequest(Message, kw_only=True):
    """ClearCache.req (CSMS → charger)."""


class ClearCacheResponse(Message, kw_only=True):
    """ClearCache.conf (charger → CSMS)."""

    status: ClearCacheStatus


class ClearChargingProfileRequest(Message, kw_only=True):
    """ClearChargingProfile.req (CSMS → charger)."""

    id: int | UnsetType = UNSET
    connector_id: int | UnsetType = UNSET
    charging_profile_purpose: ChargingProfilePurposeType | UnsetType = UNSET
    stack_level: int | UnsetType = UNSET


class ClearChargingProfileResponse(Message, kw_only=True):
    """ClearChargingProfile.conf (charger → CSMS)."""

    status: ClearChargingProfileStatus


class DataTransferRequest(Message, kw_only=True):
    """DataTransfer.req (either way)."""

    vendor_id: CiString255
    message_id: CiString50 | UnsetType = UNSET
    data: str | UnsetType = UNSET


class DataTransferResponse(Message, kw_only=True):
    """DataTransfer.conf (either way)."""

    status: DataTransferStatus
    data: str | UnsetType = UNSET


class DeleteCertificateRequest(Message, kw_only=True):
    """DeleteCertificate.req (CSMS → charger)."""

    certificate_hash_data: CertificateHashData


class DeleteCertificateResponse(Message, kw_only=True):
    """DeleteCertificate.conf (charger → CSMS)."""

    status: DeleteCertificateStatus


class DiagnosticsStatusNotificationRequest(Message, kw_only=True):
    """DiagnosticsStatusNotification.req (charger → CSMS)."""

    status: DiagnosticsStatus


class DiagnosticsStatusNotificationResponse(Message, kw_only=True):
    """DiagnosticsStatusNotification.conf (CSMS → charger)."""


class ExtendedTriggerMessageRequest(Message, kw_only=True):
    """ExtendedTriggerMessage.req (CSMS → charger)."""

    requested_message: ExtendedMessageTrigger
    connector_id: int | UnsetType = UNSET


class ExtendedTriggerMessageResponse(Message, kw_only=True):
    """ExtendedTriggerMessage.conf (charger → CSMS)."""

    status: TriggerMessageStatus


class FirmwareStatusNotificationRequest(Message, kw_only=True):
    """FirmwareStatusNotification.req (charger → CSMS)."""

    status: FirmwareStatus


class FirmwareStatusNotificationResponse(Message, kw_only=True):
    """FirmwareStatusNotification.conf (CSMS → charger)."""


class GetCompositeScheduleRequest(Message, kw_only=True):
    """GetCompositeSchedule.req (CSMS → charger)."""

    connector_id: int
    duration: int
    charging_rate_unit: ChargingRateUnitType | UnsetType = UNSET


class GetCompositeScheduleResponse(Message, kw_only=True):
    """GetCompositeSchedule.conf (charger → CSMS)."""

    status: GetCompositeScheduleStatus
    connector_id: int | UnsetType = UNSET
    schedule_start: DateTime | UnsetType = UNSET
    charging_schedule: ChargingSchedule | UnsetType = UNSET


class GetConfigurationRequest(Message, kw_only=True):
    """GetConfiguration.req (CSMS → charger)."""

    key: list[CiString50] | UnsetType = UNSET


class GetConfigurationResponse(Message, kw_only=True):
    """GetConfiguration.conf (charger → CSMS)."""

    configuration_key: list[KeyValue] | UnsetType = UNSET
    unknown_key: list[CiString50] | UnsetType = UNSET


class GetDiagnosticsRequest(Message, kw_only=True):
    """GetDiagnostics.req (CSMS → charger)."""

    location: str
    retries: int | UnsetType = UNSET
    retry_interval: int | UnsetType = UNSET
    start_time: DateTime | UnsetType = UNSET
    stop_time: DateTime | UnsetType = UNSET


class GetDiagnosticsResponse(Message, kw_only=True):
    """GetDiagnostics.conf (charger → CSMS)."""

    file_name: CiString255 | UnsetType = UNSET


class GetInstalledCertificateIdsRequest(Message, kw_only=True):
    """GetInstalledCertificateIds.req (CSMS → charger)."""

    certificate_type: CertificateUse


class GetInstalledCertificateIdsResponse(Message, kw_only=True):
    """GetInstalledCertificateIds.conf (charger → CSMS)."""

    certificate_hash_data: Annotated[list[CertificateHashData], Meta(min_length=1)] | UnsetType = (
        UNSET
    )
    status: GetInstalledCertificateStatus


class GetLocalListVersionRequest(Message, kw_only=True):
    """GetLocalListVersion.req (CSMS → charger)."""


class GetLocalListVersionResponse(Message, kw_only=True):
    """GetLocalListVersion.conf (charger → CSMS)."""

    list_version: int


class GetLogRequest(Message, kw_only=True):
    """GetLog.req (CSMS → charger)."""

    log: LogParameters
    log_type: LogType
    request_id: int
    retries: int | UnsetType = UNSET
    retry_interval: int | UnsetType = UNSET


class GetLogResponse(Message, kw_only=True):
    """GetLog.conf (charger → CSMS)."""

    status: LogStatus
    filename: CiString255 | UnsetType = UNSET


class HeartbeatRequest(Message, kw_only=True):
    """Heartbeat.req (charger → CSMS)."""


class HeartbeatResponse(Message, kw_only=True):
    """Heartbeat.conf (CSMS → charger)."""

    current_time: DateTime


class InstallCertificateRequest(Message, kw_only=True):
    """InstallCertificate.req (CSMS → charger)."""

    certificate_type: CertificateUse
    certificate: String5500


class InstallCertificateResponse(Message, kw_only=True):
    """InstallCertificate.conf (charger → CSMS)."""

    status: InstallCertificateStatus


class LogStatusNotificationRequest(Message, kw_only=True):
    """LogStatusNotification.req (charger → CSMS)."""

    status: UploadLogStatus
    request_id: int | UnsetType = UNSET


class LogStatusNotificationResponse(Message, kw_only=True):
    """LogStatusNotification.conf (CSMS → charger)."""


class MeterValuesRequest(Message, kw_only=True):
    """MeterValues.req (charger → CSMS)."""

    connector_id: int
    transaction_id: int | UnsetType = UNSET
    meter_value: Annotated[list[MeterValue], Meta(min_length=1)]


class MeterValuesResponse(Message, kw_only=True):
    """MeterValues.conf (CSMS → charger)."""


class RemoteStartTransactionRequest(Message, kw_only=True):
    """RemoteStartTransaction.req (CSMS → charger)."""

    connector_id: int | UnsetType = UNSET
    id_tag: CiString20
    charging_profile: ChargingProfile | UnsetType = UNSET


class RemoteStartTransactionResponse(Message, kw_only=True):
    """RemoteStartTransaction.conf (charger → CSMS)."""

    status: RemoteStartStopStatus


class RemoteStopTransactionRequest(Message, kw_only=True):
    """RemoteStopTransaction.req (CSMS → charger)."""

    transaction_id: int


class RemoteStopTransactionResponse(Message, kw_only=True):
    """RemoteStopTransaction.conf (charger → CSMS)."""

    status: RemoteStartStopStatus


class ReserveNowRequest(Message, kw_only=True):
    """ReserveNow.req (CSMS → charger)."""

    connector_id: int
    expiry_date: DateTime
    id_tag: CiString20
    parent_id_tag: CiString20 | UnsetType = UNSET
    reservation_id: int


class ReserveNowResponse(Message, kw_only=True):
    """ReserveNow.conf (charger → CSMS)."""

    status: ReservationStatus


class ResetRequest(Message, kw_only=True):
    """Reset.req (CSMS → charger)."""

    type: ResetType


class ResetResponse(Message, kw_only=True):
    """Reset.conf (charger → CSMS)."""

    status: ResetStatus


class SecurityEventNotificationRequest(Message, kw_only=True):
    """SecurityEventNotification.req (charger → CSMS)."""

    type: CiString50
    timestamp: DateTime
    tech_info: CiString255 | UnsetType = UNSET


class SecurityEventNotificationResponse(Message, kw_only=True):
    """SecurityEventNotification.conf (CSMS → charger)."""


class SendLocalListRequest(Message, kw_only=True):
    """SendLocalList.req (CSMS → charger)."""

    list_version: int
    local_authorization_list: list[AuthorizationData] | UnsetType = UNSET
    update_type: UpdateType


class SendLocalListResponse(Message, kw_only=True):
    """SendLocalList.conf (charger → CSMS)."""

    status: UpdateStatus


class SetChargingProfileRequest(Message, kw_only=True):
    """SetChargingProfile.req (CSMS → charger)."""

    connector_id: int
    cs_charging_profiles: ChargingProfile


class SetChargingProfileResponse(Message, kw_only=True):
    """SetChargingProfile.conf (charger → CSMS)."""

    status: ChargingProfileStatus


class SignCertificateRequest(Message, kw_only=True):
    """SignCertificate.req (charger → CSMS)."""

    csr: String5500


class SignCertificateResponse(Message, kw_only=True):
    """SignCertificate.conf (CSMS → charger)."""

    status: GenericStatus


class SignedFirmwareStatusNotificationRequest(Message, kw_only=True):
    """SignedFirmwareStatusNotification.req (charger → CSMS)."""

    status: SignedFirmwareStatus
    request_id: int | UnsetType = UNSET


class SignedFirmwareStatusNotificationResponse(Message, kw_only=True):
    """SignedFirmwareStatusNotification.conf (CSMS → charger)."""


class SignedUpdateFirmwareRequest(Message, kw_only=True):
    """SignedUpdateFirmware.req (CSMS → charger)."""

    retries: int | UnsetType = UNSET
    retry_interval: int | UnsetType = UNSET
    request_id: int
    firmware: Firmware


class SignedUpdateFirmwareResponse(Message, kw_only=True):
    """SignedUpdateFirmware.conf (charger → CSMS)."""

    status: UpdateFirmwareStatus


class StartTransactionRequest(Message, kw_only=True):
    """StartTransaction.req (charger → CSMS)."""

    connector_id: int
    id_tag: CiString20
    meter_start: int
    reservation_id: int | UnsetType = UNSET
    timestamp: DateTime


class StartTransactionResponse(Message, kw_only=True):
    """StartTransaction.conf (CSMS → charger)."""

    id_tag_info: IdTagInfo
    transaction_id: int


class StatusNotificationRequest(Message, kw_only=True):
    """StatusNotification.req (charger → CSMS)."""

    connector_id: int
    error_code: ChargePointErrorCode
    info: CiString50 | UnsetType = UNSET
    status: ChargePointStatus
    timestamp: DateTime | UnsetType = UNSET
    vendor_id: CiString255 | UnsetType = UNSET
    vendor_error_code: CiString50 | UnsetType = UNSET


class StatusNotificationResponse(Message, kw_only=True):
    """StatusNotification.conf (CSMS → charger)."""


class StopTransactionRequest(Message, kw_only=True):
    """StopTransaction.req (charger → CSMS)."""

    id_tag: CiString20 | UnsetType = UNSET
    meter_stop: int
    timestamp: DateTime
    transaction_id: int
    reason: Reason | UnsetType = UNSET
    transaction_data: list[MeterValue] | UnsetType = UNSET


class StopTransactionResponse(Message, kw_only=True):
    """StopTransaction.conf (CSMS → charger)."""

    id_tag_info: IdTagInfo | UnsetType = UNSET


class TriggerMessageRequest(Message, kw_only=True):
    """TriggerMessage.req (CSMS → charger)."""

    requested_message: MessageTrigger
    connector_id: int | UnsetType = UNSET


class TriggerMessageResponse(Message, kw_only=True):
    """TriggerMessage.conf (charger → CSMS)."""

    status: TriggerMessageStatus


class UnlockConnectorRequest(Message, kw_only=True):
    """UnlockConnector.req (CSMS → charger)."""

    connector_id: int


class UnlockConnectorResponse(Message, kw_only=True):
    """UnlockConnector.conf (charger → CSMS)."""

    status: UnlockStatus


class UpdateFirmwareRequest(Message, kw_only=True):
    """UpdateFirmware.req (CSMS → charger)."""

    location: str
    retries: int | UnsetType = UNSET
    retrieve_date: DateTime
    retry_interval: int | UnsetType = UNSET


class UpdateFirmwareResponse(Message, kw_only=True):
    """UpdateFirmware.conf (charger → CSMS)."""
