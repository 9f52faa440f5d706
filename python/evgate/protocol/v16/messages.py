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

    ``gc=False``: instances hold only strings, numbers, enums, datetimes and lists of other
    Messages, so they cannot form reference cycles, and skipping the cycle collector's
    tracking makes decoding cheaper on the hot path.
    """


# Objects nested in several payloads.


class IdTagInfo(Message):
    """How the CSMS judges an id tag (Authorize, Start/StopTransaction, SendLocalList)."""

    status: AuthorizationStatus
    expiry_date: DateTime | UnsetType = UNSET
    parent_id_tag: CiString20 | UnsetType = UNSET


class AuthorizationData(Message):
    """One entry of the local authorization list sent with SendLocalList.req."""

    id_tag: CiString20
    id_tag_info: IdTagInfo | UnsetType = UNSET


class SampledValue(Message):
    """One measured value; ``value`` is a string on the wire, as OCPP defines it."""

    value: str
    context: ReadingContext | UnsetType = UNSET
    format: ValueFormat | UnsetType = UNSET
    measurand: Measurand | UnsetType = UNSET
    phase: Phase | UnsetType = UNSET
    location: Location | UnsetType = UNSET
    unit: UnitOfMeasure | UnsetType = UNSET


class MeterValue(Message):
    """Sampled values taken at one instant.

    MeterValues.req requires at least one sampled value here, StopTransaction.req's
    ``transactionData`` does not: one type serves both and the MeterValues rule is checked after
    decoding (``evgate.protocol.validation``).
    """

    timestamp: DateTime
    sampled_value: list[SampledValue]


class ChargingSchedulePeriod(Message):
    """One period of a charging schedule; ``limit`` has at most one decimal (multipleOf 0.1)."""

    start_period: int
    limit: float
    number_phases: int | UnsetType = UNSET


class ChargingSchedule(Message):
    """A charging schedule; ``minChargingRate`` has at most one decimal (multipleOf 0.1)."""

    charging_rate_unit: ChargingRateUnitType
    charging_schedule_period: list[ChargingSchedulePeriod]
    duration: int | UnsetType = UNSET
    start_schedule: DateTime | UnsetType = UNSET
    min_charging_rate: float | UnsetType = UNSET


class ChargingProfile(Message):
    """A charging profile (SetChargingProfile.req, RemoteStartTransaction.req)."""

    charging_profile_id: int
    stack_level: int
    charging_profile_purpose: ChargingProfilePurposeType
    charging_profile_kind: ChargingProfileKindType
    charging_schedule: ChargingSchedule
    transaction_id: int | UnsetType = UNSET
    recurrency_kind: RecurrencyKindType | UnsetType = UNSET
    valid_from: DateTime | UnsetType = UNSET
    valid_to: DateTime | UnsetType = UNSET


class KeyValue(Message):
    """One configuration key reported in GetConfiguration.conf."""

    key: CiString50
    readonly: bool
    value: CiString500 | UnsetType = UNSET


class CertificateHashData(Message):
    """Identifies a certificate by its issuer hashes and serial number (security extension)."""

    hash_algorithm: HashAlgorithm
    issuer_name_hash: String128
    issuer_key_hash: String128
    serial_number: String40


class LogParameters(Message):
    """Where to upload a log and which period it covers (GetLog.req)."""

    remote_location: String512
    oldest_timestamp: DateTime | UnsetType = UNSET
    latest_timestamp: DateTime | UnsetType = UNSET


class Firmware(Message):
    """A signed firmware image to install (SignedUpdateFirmware.req)."""

    location: String512
    retrieve_date_time: DateTime
    signing_certificate: String5500
    signature: String800
    install_date_time: DateTime | UnsetType = UNSET


# Payloads, one request and one response per action, in alphabetical order of action.


class AuthorizeRequest(Message):
    """Authorize.req (charger → CSMS)."""

    id_tag: CiString20


class AuthorizeResponse(Message):
    """Authorize.conf (CSMS → charger)."""

    id_tag_info: IdTagInfo


class BootNotificationRequest(Message):
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


class BootNotificationResponse(Message):
    """BootNotification.conf (CSMS → charger)."""

    status: RegistrationStatus
    current_time: DateTime
    interval: int


class CancelReservationRequest(Message):
    """CancelReservation.req (CSMS → charger)."""

    reservation_id: int


class CancelReservationResponse(Message):
    """CancelReservation.conf (charger → CSMS)."""

    status: CancelReservationStatus


class CertificateSignedRequest(Message):
    """CertificateSigned.req (CSMS → charger)."""

    certificate_chain: String10000


class CertificateSignedResponse(Message):
    """CertificateSigned.conf (charger → CSMS)."""

    status: CertificateSignedStatus


class ChangeAvailabilityRequest(Message):
    """ChangeAvailability.req (CSMS → charger)."""

    connector_id: int
    type: AvailabilityType


class ChangeAvailabilityResponse(Message):
    """ChangeAvailability.conf (charger → CSMS)."""

    status: AvailabilityStatus


class ChangeConfigurationRequest(Message):
    """ChangeConfiguration.req (CSMS → charger)."""

    key: CiString50
    value: CiString500


class ChangeConfigurationResponse(Message):
    """ChangeConfiguration.conf (charger → CSMS)."""

    status: ConfigurationStatus


class ClearCacheRequest(Message):
    """ClearCache.req (CSMS → charger)."""


class ClearCacheResponse(Message):
    """ClearCache.conf (charger → CSMS)."""

    status: ClearCacheStatus


class ClearChargingProfileRequest(Message):
    """ClearChargingProfile.req (CSMS → charger)."""

    id: int | UnsetType = UNSET
    connector_id: int | UnsetType = UNSET
    charging_profile_purpose: ChargingProfilePurposeType | UnsetType = UNSET
    stack_level: int | UnsetType = UNSET


class ClearChargingProfileResponse(Message):
    """ClearChargingProfile.conf (charger → CSMS)."""

    status: ClearChargingProfileStatus


class DataTransferRequest(Message):
    """DataTransfer.req (either way)."""

    vendor_id: CiString255
    message_id: CiString50 | UnsetType = UNSET
    data: str | UnsetType = UNSET


class DataTransferResponse(Message):
    """DataTransfer.conf (either way)."""

    status: DataTransferStatus
    data: str | UnsetType = UNSET


class DeleteCertificateRequest(Message):
    """DeleteCertificate.req (CSMS → charger)."""

    certificate_hash_data: CertificateHashData


class DeleteCertificateResponse(Message):
    """DeleteCertificate.conf (charger → CSMS)."""

    status: DeleteCertificateStatus


class DiagnosticsStatusNotificationRequest(Message):
    """DiagnosticsStatusNotification.req (charger → CSMS)."""

    status: DiagnosticsStatus


class DiagnosticsStatusNotificationResponse(Message):
    """DiagnosticsStatusNotification.conf (CSMS → charger)."""


class ExtendedTriggerMessageRequest(Message):
    """ExtendedTriggerMessage.req (CSMS → charger)."""

    requested_message: ExtendedMessageTrigger
    connector_id: int | UnsetType = UNSET


class ExtendedTriggerMessageResponse(Message):
    """ExtendedTriggerMessage.conf (charger → CSMS)."""

    status: TriggerMessageStatus


class FirmwareStatusNotificationRequest(Message):
    """FirmwareStatusNotification.req (charger → CSMS)."""

    status: FirmwareStatus


class FirmwareStatusNotificationResponse(Message):
    """FirmwareStatusNotification.conf (CSMS → charger)."""


class GetCompositeScheduleRequest(Message):
    """GetCompositeSchedule.req (CSMS → charger)."""

    connector_id: int
    duration: int
    charging_rate_unit: ChargingRateUnitType | UnsetType = UNSET


class GetCompositeScheduleResponse(Message):
    """GetCompositeSchedule.conf (charger → CSMS)."""

    status: GetCompositeScheduleStatus
    connector_id: int | UnsetType = UNSET
    schedule_start: DateTime | UnsetType = UNSET
    charging_schedule: ChargingSchedule | UnsetType = UNSET


class GetConfigurationRequest(Message):
    """GetConfiguration.req (CSMS → charger)."""

    key: list[CiString50] | UnsetType = UNSET


class GetConfigurationResponse(Message):
    """GetConfiguration.conf (charger → CSMS)."""

    configuration_key: list[KeyValue] | UnsetType = UNSET
    unknown_key: list[CiString50] | UnsetType = UNSET


class GetDiagnosticsRequest(Message):
    """GetDiagnostics.req (CSMS → charger)."""

    location: str
    retries: int | UnsetType = UNSET
    retry_interval: int | UnsetType = UNSET
    start_time: DateTime | UnsetType = UNSET
    stop_time: DateTime | UnsetType = UNSET


class GetDiagnosticsResponse(Message):
    """GetDiagnostics.conf (charger → CSMS)."""

    file_name: CiString255 | UnsetType = UNSET


class GetInstalledCertificateIdsRequest(Message):
    """GetInstalledCertificateIds.req (CSMS → charger)."""

    certificate_type: CertificateUse


class GetInstalledCertificateIdsResponse(Message):
    """GetInstalledCertificateIds.conf (charger → CSMS)."""

    status: GetInstalledCertificateStatus
    certificate_hash_data: Annotated[list[CertificateHashData], Meta(min_length=1)] | UnsetType = (
        UNSET
    )


class GetLocalListVersionRequest(Message):
    """GetLocalListVersion.req (CSMS → charger)."""


class GetLocalListVersionResponse(Message):
    """GetLocalListVersion.conf (charger → CSMS)."""

    list_version: int


class GetLogRequest(Message):
    """GetLog.req (CSMS → charger)."""

    log: LogParameters
    log_type: LogType
    request_id: int
    retries: int | UnsetType = UNSET
    retry_interval: int | UnsetType = UNSET


class GetLogResponse(Message):
    """GetLog.conf (charger → CSMS)."""

    status: LogStatus
    filename: CiString255 | UnsetType = UNSET


class HeartbeatRequest(Message):
    """Heartbeat.req (charger → CSMS)."""


class HeartbeatResponse(Message):
    """Heartbeat.conf (CSMS → charger)."""

    current_time: DateTime


class InstallCertificateRequest(Message):
    """InstallCertificate.req (CSMS → charger)."""

    certificate_type: CertificateUse
    certificate: String5500


class InstallCertificateResponse(Message):
    """InstallCertificate.conf (charger → CSMS)."""

    status: InstallCertificateStatus


class LogStatusNotificationRequest(Message):
    """LogStatusNotification.req (charger → CSMS)."""

    status: UploadLogStatus
    request_id: int | UnsetType = UNSET


class LogStatusNotificationResponse(Message):
    """LogStatusNotification.conf (CSMS → charger)."""


class MeterValuesRequest(Message):
    """MeterValues.req (charger → CSMS)."""

    connector_id: int
    meter_value: Annotated[list[MeterValue], Meta(min_length=1)]
    transaction_id: int | UnsetType = UNSET


class MeterValuesResponse(Message):
    """MeterValues.conf (CSMS → charger)."""


class RemoteStartTransactionRequest(Message):
    """RemoteStartTransaction.req (CSMS → charger)."""

    id_tag: CiString20
    connector_id: int | UnsetType = UNSET
    charging_profile: ChargingProfile | UnsetType = UNSET


class RemoteStartTransactionResponse(Message):
    """RemoteStartTransaction.conf (charger → CSMS)."""

    status: RemoteStartStopStatus


class RemoteStopTransactionRequest(Message):
    """RemoteStopTransaction.req (CSMS → charger)."""

    transaction_id: int


class RemoteStopTransactionResponse(Message):
    """RemoteStopTransaction.conf (charger → CSMS)."""

    status: RemoteStartStopStatus


class ReserveNowRequest(Message):
    """ReserveNow.req (CSMS → charger)."""

    connector_id: int
    expiry_date: DateTime
    id_tag: CiString20
    reservation_id: int
    parent_id_tag: CiString20 | UnsetType = UNSET


class ReserveNowResponse(Message):
    """ReserveNow.conf (charger → CSMS)."""

    status: ReservationStatus


class ResetRequest(Message):
    """Reset.req (CSMS → charger)."""

    type: ResetType


class ResetResponse(Message):
    """Reset.conf (charger → CSMS)."""

    status: ResetStatus


class SecurityEventNotificationRequest(Message):
    """SecurityEventNotification.req (charger → CSMS)."""

    type: CiString50
    timestamp: DateTime
    tech_info: CiString255 | UnsetType = UNSET


class SecurityEventNotificationResponse(Message):
    """SecurityEventNotification.conf (CSMS → charger)."""


class SendLocalListRequest(Message):
    """SendLocalList.req (CSMS → charger)."""

    list_version: int
    update_type: UpdateType
    local_authorization_list: list[AuthorizationData] | UnsetType = UNSET


class SendLocalListResponse(Message):
    """SendLocalList.conf (charger → CSMS)."""

    status: UpdateStatus


class SetChargingProfileRequest(Message):
    """SetChargingProfile.req (CSMS → charger)."""

    connector_id: int
    cs_charging_profiles: ChargingProfile


class SetChargingProfileResponse(Message):
    """SetChargingProfile.conf (charger → CSMS)."""

    status: ChargingProfileStatus


class SignCertificateRequest(Message):
    """SignCertificate.req (charger → CSMS)."""

    csr: String5500


class SignCertificateResponse(Message):
    """SignCertificate.conf (CSMS → charger)."""

    status: GenericStatus


class SignedFirmwareStatusNotificationRequest(Message):
    """SignedFirmwareStatusNotification.req (charger → CSMS)."""

    status: SignedFirmwareStatus
    request_id: int | UnsetType = UNSET


class SignedFirmwareStatusNotificationResponse(Message):
    """SignedFirmwareStatusNotification.conf (CSMS → charger)."""


class SignedUpdateFirmwareRequest(Message):
    """SignedUpdateFirmware.req (CSMS → charger)."""

    request_id: int
    firmware: Firmware
    retries: int | UnsetType = UNSET
    retry_interval: int | UnsetType = UNSET


class SignedUpdateFirmwareResponse(Message):
    """SignedUpdateFirmware.conf (charger → CSMS)."""

    status: UpdateFirmwareStatus


class StartTransactionRequest(Message):
    """StartTransaction.req (charger → CSMS)."""

    connector_id: int
    id_tag: CiString20
    meter_start: int
    timestamp: DateTime
    reservation_id: int | UnsetType = UNSET


class StartTransactionResponse(Message):
    """StartTransaction.conf (CSMS → charger)."""

    id_tag_info: IdTagInfo
    transaction_id: int


class StatusNotificationRequest(Message):
    """StatusNotification.req (charger → CSMS)."""

    connector_id: int
    error_code: ChargePointErrorCode
    status: ChargePointStatus
    info: CiString50 | UnsetType = UNSET
    timestamp: DateTime | UnsetType = UNSET
    vendor_id: CiString255 | UnsetType = UNSET
    vendor_error_code: CiString50 | UnsetType = UNSET


class StatusNotificationResponse(Message):
    """StatusNotification.conf (CSMS → charger)."""


class StopTransactionRequest(Message):
    """StopTransaction.req (charger → CSMS)."""

    meter_stop: int
    timestamp: DateTime
    transaction_id: int
    id_tag: CiString20 | UnsetType = UNSET
    reason: Reason | UnsetType = UNSET
    transaction_data: list[MeterValue] | UnsetType = UNSET


class StopTransactionResponse(Message):
    """StopTransaction.conf (CSMS → charger)."""

    id_tag_info: IdTagInfo | UnsetType = UNSET


class TriggerMessageRequest(Message):
    """TriggerMessage.req (CSMS → charger)."""

    requested_message: MessageTrigger
    connector_id: int | UnsetType = UNSET


class TriggerMessageResponse(Message):
    """TriggerMessage.conf (charger → CSMS)."""

    status: TriggerMessageStatus


class UnlockConnectorRequest(Message):
    """UnlockConnector.req (CSMS → charger)."""

    connector_id: int


class UnlockConnectorResponse(Message):
    """UnlockConnector.conf (charger → CSMS)."""

    status: UnlockStatus


class UpdateFirmwareRequest(Message):
    """UpdateFirmware.req (CSMS → charger)."""

    location: str
    retrieve_date: DateTime
    retries: int | UnsetType = UNSET
    retry_interval: int | UnsetType = UNSET


class UpdateFirmwareResponse(Message):
    """UpdateFirmware.conf (charger → CSMS)."""
