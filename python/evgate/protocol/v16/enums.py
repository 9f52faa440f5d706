"""OCPP 1.6J enumerations (room: protocol), the security extension's included.

One ``StrEnum`` per enumerated type of the official JSON schemas, named as in the OCPP 1.6
specification (``RegistrationStatus``, ``ChargePointStatus``, ...). Members are snake_case
Python names whose values are the exact wire strings, so ``RegistrationStatus.accepted ==
"Accepted"`` and msgspec encodes and decodes them by value.

Where two schemas carry the same list under different names, one enum serves both
(``TriggerMessageStatus`` for TriggerMessage.conf and ExtendedTriggerMessage.conf). Where the
security extension reuses a core name for a different list, the extension's enum is prefixed
(``SignedFirmwareStatus``, ``ExtendedMessageTrigger``).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AuthorizationStatus",
    "AvailabilityStatus",
    "AvailabilityType",
    "CancelReservationStatus",
    "CertificateSignedStatus",
    "CertificateUse",
    "ChargePointErrorCode",
    "ChargePointStatus",
    "ChargingProfileKindType",
    "ChargingProfilePurposeType",
    "ChargingProfileStatus",
    "ChargingRateUnitType",
    "ClearCacheStatus",
    "ClearChargingProfileStatus",
    "ConfigurationStatus",
    "DataTransferStatus",
    "DeleteCertificateStatus",
    "DiagnosticsStatus",
    "ExtendedMessageTrigger",
    "FirmwareStatus",
    "GenericStatus",
    "GetCompositeScheduleStatus",
    "GetInstalledCertificateStatus",
    "HashAlgorithm",
    "InstallCertificateStatus",
    "Location",
    "LogStatus",
    "LogType",
    "Measurand",
    "MessageTrigger",
    "Phase",
    "ReadingContext",
    "Reason",
    "RecurrencyKindType",
    "RegistrationStatus",
    "RemoteStartStopStatus",
    "ReservationStatus",
    "ResetStatus",
    "ResetType",
    "SignedFirmwareStatus",
    "TriggerMessageStatus",
    "UnitOfMeasure",
    "UnlockStatus",
    "UpdateFirmwareStatus",
    "UpdateStatus",
    "UpdateType",
    "UploadLogStatus",
    "ValueFormat",
]


class AuthorizationStatus(StrEnum):
    """Values of Authorize.conf idTagInfo.status and others."""

    accepted = "Accepted"
    blocked = "Blocked"
    expired = "Expired"
    invalid = "Invalid"
    concurrent_tx = "ConcurrentTx"


class AvailabilityStatus(StrEnum):
    """Values of ChangeAvailability.conf status."""

    accepted = "Accepted"
    rejected = "Rejected"
    scheduled = "Scheduled"


class AvailabilityType(StrEnum):
    """Values of ChangeAvailability.req type."""

    inoperative = "Inoperative"
    operative = "Operative"


class CancelReservationStatus(StrEnum):
    """Values of CancelReservation.conf status."""

    accepted = "Accepted"
    rejected = "Rejected"


class CertificateSignedStatus(StrEnum):
    """Values of CertificateSigned.conf status."""

    accepted = "Accepted"
    rejected = "Rejected"


class CertificateUse(StrEnum):
    """Values of GetInstalledCertificateIds.req certificateType and others."""

    central_system_root_certificate = "CentralSystemRootCertificate"
    manufacturer_root_certificate = "ManufacturerRootCertificate"


class ChargePointErrorCode(StrEnum):
    """Values of StatusNotification.req errorCode."""

    connector_lock_failure = "ConnectorLockFailure"
    ev_communication_error = "EVCommunicationError"
    ground_failure = "GroundFailure"
    high_temperature = "HighTemperature"
    internal_error = "InternalError"
    local_list_conflict = "LocalListConflict"
    no_error = "NoError"
    other_error = "OtherError"
    over_current_failure = "OverCurrentFailure"
    power_meter_failure = "PowerMeterFailure"
    power_switch_failure = "PowerSwitchFailure"
    reader_failure = "ReaderFailure"
    reset_failure = "ResetFailure"
    under_voltage = "UnderVoltage"
    over_voltage = "OverVoltage"
    weak_signal = "WeakSignal"


class ChargePointStatus(StrEnum):
    """Values of StatusNotification.req status."""

    available = "Available"
    preparing = "Preparing"
    charging = "Charging"
    suspended_evse = "SuspendedEVSE"
    suspended_ev = "SuspendedEV"
    finishing = "Finishing"
    reserved = "Reserved"
    unavailable = "Unavailable"
    faulted = "Faulted"


class ChargingProfileKindType(StrEnum):
    """Values of RemoteStartTransaction.req chargingProfile.chargingProfileKind and others."""

    absolute = "Absolute"
    recurring = "Recurring"
    relative = "Relative"


class ChargingProfilePurposeType(StrEnum):
    """Values of ClearChargingProfile.req chargingProfilePurpose and others."""

    charge_point_max_profile = "ChargePointMaxProfile"
    tx_default_profile = "TxDefaultProfile"
    tx_profile = "TxProfile"


class ChargingProfileStatus(StrEnum):
    """Values of SetChargingProfile.conf status."""

    accepted = "Accepted"
    rejected = "Rejected"
    not_supported = "NotSupported"


class ChargingRateUnitType(StrEnum):
    """Values of GetCompositeSchedule.req chargingRateUnit and others."""

    a = "A"
    w = "W"


class ClearCacheStatus(StrEnum):
    """Values of ClearCache.conf status."""

    accepted = "Accepted"
    rejected = "Rejected"


class ClearChargingProfileStatus(StrEnum):
    """Values of ClearChargingProfile.conf status."""

    accepted = "Accepted"
    unknown = "Unknown"


class ConfigurationStatus(StrEnum):
    """Values of ChangeConfiguration.conf status."""

    accepted = "Accepted"
    rejected = "Rejected"
    reboot_required = "RebootRequired"
    not_supported = "NotSupported"


class DataTransferStatus(StrEnum):
    """Values of DataTransfer.conf status."""

    accepted = "Accepted"
    rejected = "Rejected"
    unknown_message_id = "UnknownMessageId"
    unknown_vendor_id = "UnknownVendorId"


class DeleteCertificateStatus(StrEnum):
    """Values of DeleteCertificate.conf status."""

    accepted = "Accepted"
    failed = "Failed"
    not_found = "NotFound"


class DiagnosticsStatus(StrEnum):
    """Values of DiagnosticsStatusNotification.req status."""

    idle = "Idle"
    uploaded = "Uploaded"
    upload_failed = "UploadFailed"
    uploading = "Uploading"


class ExtendedMessageTrigger(StrEnum):
    """Values of ExtendedTriggerMessage.req requestedMessage."""

    boot_notification = "BootNotification"
    log_status_notification = "LogStatusNotification"
    firmware_status_notification = "FirmwareStatusNotification"
    heartbeat = "Heartbeat"
    meter_values = "MeterValues"
    sign_charge_point_certificate = "SignChargePointCertificate"
    status_notification = "StatusNotification"


class FirmwareStatus(StrEnum):
    """Values of FirmwareStatusNotification.req status."""

    downloaded = "Downloaded"
    download_failed = "DownloadFailed"
    downloading = "Downloading"
    idle = "Idle"
    installation_failed = "InstallationFailed"
    installing = "Installing"
    installed = "Installed"


class GenericStatus(StrEnum):
    """Values of SignCertificate.conf status."""

    accepted = "Accepted"
    rejected = "Rejected"


class GetCompositeScheduleStatus(StrEnum):
    """Values of GetCompositeSchedule.conf status."""

    accepted = "Accepted"
    rejected = "Rejected"


class GetInstalledCertificateStatus(StrEnum):
    """Values of GetInstalledCertificateIds.conf status."""

    accepted = "Accepted"
    not_found = "NotFound"


class HashAlgorithm(StrEnum):
    """Values of DeleteCertificate.req certificateHashData.hashAlgorithm and others."""

    sha256 = "SHA256"
    sha384 = "SHA384"
    sha512 = "SHA512"


class InstallCertificateStatus(StrEnum):
    """Values of InstallCertificate.conf status."""

    accepted = "Accepted"
    failed = "Failed"
    rejected = "Rejected"


class Location(StrEnum):
    """Values of MeterValues.req meterValue[*].sampledValue[*].location and others."""

    cable = "Cable"
    ev = "EV"
    inlet = "Inlet"
    outlet = "Outlet"
    body = "Body"


class LogStatus(StrEnum):
    """Values of GetLog.conf status."""

    accepted = "Accepted"
    rejected = "Rejected"
    accepted_canceled = "AcceptedCanceled"


class LogType(StrEnum):
    """Values of GetLog.req logType."""

    diagnostics_log = "DiagnosticsLog"
    security_log = "SecurityLog"


class Measurand(StrEnum):
    """Values of MeterValues.req meterValue[*].sampledValue[*].measurand and others."""

    energy_active_export_register = "Energy.Active.Export.Register"
    energy_active_import_register = "Energy.Active.Import.Register"
    energy_reactive_export_register = "Energy.Reactive.Export.Register"
    energy_reactive_import_register = "Energy.Reactive.Import.Register"
    energy_active_export_interval = "Energy.Active.Export.Interval"
    energy_active_import_interval = "Energy.Active.Import.Interval"
    energy_reactive_export_interval = "Energy.Reactive.Export.Interval"
    energy_reactive_import_interval = "Energy.Reactive.Import.Interval"
    power_active_export = "Power.Active.Export"
    power_active_import = "Power.Active.Import"
    power_offered = "Power.Offered"
    power_reactive_export = "Power.Reactive.Export"
    power_reactive_import = "Power.Reactive.Import"
    power_factor = "Power.Factor"
    current_import = "Current.Import"
    current_export = "Current.Export"
    current_offered = "Current.Offered"
    voltage = "Voltage"
    frequency = "Frequency"
    temperature = "Temperature"
    soc = "SoC"
    rpm = "RPM"


class MessageTrigger(StrEnum):
    """Values of TriggerMessage.req requestedMessage."""

    boot_notification = "BootNotification"
    diagnostics_status_notification = "DiagnosticsStatusNotification"
    firmware_status_notification = "FirmwareStatusNotification"
    heartbeat = "Heartbeat"
    meter_values = "MeterValues"
    status_notification = "StatusNotification"


class Phase(StrEnum):
    """Values of MeterValues.req meterValue[*].sampledValue[*].phase and others."""

    l1 = "L1"
    l2 = "L2"
    l3 = "L3"
    n = "N"
    l1_n = "L1-N"
    l2_n = "L2-N"
    l3_n = "L3-N"
    l1_l2 = "L1-L2"
    l2_l3 = "L2-L3"
    l3_l1 = "L3-L1"


class ReadingContext(StrEnum):
    """Values of MeterValues.req meterValue[*].sampledValue[*].context and others."""

    interruption_begin = "Interruption.Begin"
    interruption_end = "Interruption.End"
    sample_clock = "Sample.Clock"
    sample_periodic = "Sample.Periodic"
    transaction_begin = "Transaction.Begin"
    transaction_end = "Transaction.End"
    trigger = "Trigger"
    other = "Other"


class Reason(StrEnum):
    """Values of StopTransaction.req reason."""

    emergency_stop = "EmergencyStop"
    ev_disconnected = "EVDisconnected"
    hard_reset = "HardReset"
    local = "Local"
    other = "Other"
    power_loss = "PowerLoss"
    reboot = "Reboot"
    remote = "Remote"
    soft_reset = "SoftReset"
    unlock_command = "UnlockCommand"
    deauthorized = "DeAuthorized"


class RecurrencyKindType(StrEnum):
    """Values of RemoteStartTransaction.req chargingProfile.recurrencyKind and others."""

    daily = "Daily"
    weekly = "Weekly"


class RegistrationStatus(StrEnum):
    """Values of BootNotification.conf status."""

    accepted = "Accepted"
    pending = "Pending"
    rejected = "Rejected"


class RemoteStartStopStatus(StrEnum):
    """Values of RemoteStartTransaction.conf status, RemoteStopTransaction.conf status."""

    accepted = "Accepted"
    rejected = "Rejected"


class ReservationStatus(StrEnum):
    """Values of ReserveNow.conf status."""

    accepted = "Accepted"
    faulted = "Faulted"
    occupied = "Occupied"
    rejected = "Rejected"
    unavailable = "Unavailable"


class ResetStatus(StrEnum):
    """Values of Reset.conf status."""

    accepted = "Accepted"
    rejected = "Rejected"


class ResetType(StrEnum):
    """Values of Reset.req type."""

    hard = "Hard"
    soft = "Soft"


class SignedFirmwareStatus(StrEnum):
    """Values of SignedFirmwareStatusNotification.req status."""

    downloaded = "Downloaded"
    download_failed = "DownloadFailed"
    downloading = "Downloading"
    download_scheduled = "DownloadScheduled"
    download_paused = "DownloadPaused"
    idle = "Idle"
    installation_failed = "InstallationFailed"
    installing = "Installing"
    installed = "Installed"
    install_rebooting = "InstallRebooting"
    install_scheduled = "InstallScheduled"
    install_verification_failed = "InstallVerificationFailed"
    invalid_signature = "InvalidSignature"
    signature_verified = "SignatureVerified"


class TriggerMessageStatus(StrEnum):
    """Values of ExtendedTriggerMessage.conf status, TriggerMessage.conf status."""

    accepted = "Accepted"
    rejected = "Rejected"
    not_implemented = "NotImplemented"


class UnitOfMeasure(StrEnum):
    """Values of SampledValue.unit in MeterValues.req and StopTransaction.req.

    The official StopTransaction schema omits ``Hertz``; that one difference is checked
    after decoding (see ``evgate.protocol.validation``) rather than by a second enum, so
    both messages share one ``SampledValue`` type.
    """

    wh = "Wh"
    kwh = "kWh"
    varh = "varh"
    kvarh = "kvarh"
    w = "W"
    kw = "kW"
    va = "VA"
    kva = "kVA"
    var = "var"
    kvar = "kvar"
    a = "A"
    v = "V"
    k = "K"
    celcius = "Celcius"
    celsius = "Celsius"
    fahrenheit = "Fahrenheit"
    percent = "Percent"
    hertz = "Hertz"


class UnlockStatus(StrEnum):
    """Values of UnlockConnector.conf status."""

    unlocked = "Unlocked"
    unlock_failed = "UnlockFailed"
    not_supported = "NotSupported"


class UpdateFirmwareStatus(StrEnum):
    """Values of SignedUpdateFirmware.conf status."""

    accepted = "Accepted"
    rejected = "Rejected"
    accepted_canceled = "AcceptedCanceled"
    invalid_certificate = "InvalidCertificate"
    revoked_certificate = "RevokedCertificate"


class UpdateStatus(StrEnum):
    """Values of SendLocalList.conf status."""

    accepted = "Accepted"
    failed = "Failed"
    not_supported = "NotSupported"
    version_mismatch = "VersionMismatch"


class UpdateType(StrEnum):
    """Values of SendLocalList.req updateType."""

    differential = "Differential"
    full = "Full"


class UploadLogStatus(StrEnum):
    """Values of LogStatusNotification.req status."""

    bad_message = "BadMessage"
    idle = "Idle"
    not_supported_operation = "NotSupportedOperation"
    permission_denied = "PermissionDenied"
    uploaded = "Uploaded"
    upload_failure = "UploadFailure"
    uploading = "Uploading"


class ValueFormat(StrEnum):
    """Values of MeterValues.req meterValue[*].sampledValue[*].format and others."""

    raw = "Raw"
    signed_data = "SignedData"
