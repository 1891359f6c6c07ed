"""Bulk creation of shipments from CSV or JSON: all rows or none.

Every row is validated and planned; errors are reported by row and column, and
nothing is saved while any row is invalid.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from django.db import transaction

from .errors import DomainError
from .serializers import ShipmentInputSerializer
from .services import CreatedShipment, shipment_create_from_input

MAX_ROWS = 5000
CSV_COLUMNS = [
    "reference",
    "shipper_id",
    "consignee_name",
    "consignee_email",
    "consignee_phone",
    "consignee_language",
    "origin_address",
    "origin_latitude",
    "origin_longitude",
    "destination_address",
    "destination_latitude",
    "destination_longitude",
    "service_level",
    "pickup_window_start",
    "pickup_window_end",
    "delivery_window_start",
    "delivery_window_end",
    "parcel_count",
    "weight_kg",
    "volume_m3",
    "notes",
    "origin_hub",
    "destination_hub",
]
REQUIRED_COLUMNS = [
    "reference",
    "shipper_id",
    "consignee_name",
    "origin_address",
    "origin_latitude",
    "origin_longitude",
    "destination_address",
    "destination_latitude",
    "destination_longitude",
    "weight_kg",
]


class ImportFormatError(DomainError):
    code = "malformed_csv"


@dataclass
class ImportResult:
    created: list[CreatedShipment] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # {"row", "column", "message"}


def csv_rows_parse(raw: bytes) -> list[dict]:
    """CSV bytes to row dicts shaped like the JSON input; raises ImportFormatError."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFormatError("The file is not UTF-8 text.", field="file") from exc
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ImportFormatError(
                f"Missing column(s): {', '.join(missing)}.",
                field="file",
                missing_columns=missing,
            )
        unknown = [c for c in header if c not in CSV_COLUMNS]
        if unknown:
            raise ImportFormatError(
                f"Unknown column(s): {', '.join(unknown)}.",
                field="file",
                unknown_columns=unknown,
            )
        rows = []
        for line in reader:
            if None in line:  # more cells than headers
                raise ImportFormatError(
                    f"Row {reader.line_num - 1} has more cells than the header.",
                    field="file",
                )
            rows.append({k: (v or "").strip() for k, v in line.items()})
            if len(rows) > MAX_ROWS:
                raise ImportFormatError(
                    f"At most {MAX_ROWS} rows per file.", field="file"
                )
    except csv.Error as exc:
        raise ImportFormatError(f"The CSV is malformed: {exc}.", field="file") from exc
    if not rows:
        raise ImportFormatError("The file has a header but no rows.", field="file")
    return [_csv_row_to_input(row) for row in rows]


def _csv_row_to_input(row: dict) -> dict:
    def opt(name):
        return row.get(name) or None

    count_text = row.get("parcel_count") or "1"
    try:
        count = int(count_text)
    except ValueError:
        count = -1
    try:
        total_weight = Decimal(row["weight_kg"])
        weight_each = str(total_weight / count) if count > 0 else row["weight_kg"]
    except (InvalidOperation, ZeroDivisionError):
        weight_each = row["weight_kg"]
    volume = row.get("volume_m3") or "0"
    parcels = [{"weight_kg": weight_each, "volume_m3": volume}] * max(count, 0)
    data = {
        "reference": row["reference"],
        "shipper": row["shipper_id"],
        "consignee": {
            "name": row["consignee_name"],
            "email": row.get("consignee_email", ""),
            "phone": row.get("consignee_phone", ""),
            "language": row.get("consignee_language") or "en",
        },
        "origin": {
            "address": row["origin_address"],
            "latitude": row["origin_latitude"],
            "longitude": row["origin_longitude"],
        },
        "destination": {
            "address": row["destination_address"],
            "latitude": row["destination_latitude"],
            "longitude": row["destination_longitude"],
        },
        "service_level": row.get("service_level") or "standard",
        "pickup_window_start": opt("pickup_window_start"),
        "pickup_window_end": opt("pickup_window_end"),
        "delivery_window_start": opt("delivery_window_start"),
        "delivery_window_end": opt("delivery_window_end"),
        "notes": row.get("notes", ""),
        "parcels": parcels,
    }
    if count < 1:
        data["parcels"] = []
    for hub_field in ("origin_hub", "destination_hub"):
        if row.get(hub_field):
            data[hub_field] = row[hub_field]
    return data


def _csv_column(path: str) -> str:
    """The CSV column an error path refers to (nested JSON names flattened by '_')."""
    if path == "shipper":
        return "shipper_id"
    if path == "parcels":
        return "parcel_count"
    return path.removeprefix("parcels_")


def _flatten_errors(errors, prefix=()) -> list[tuple[str, str]]:
    flat: list[tuple[str, str]] = []
    if isinstance(errors, dict):
        for key, value in errors.items():
            flat.extend(_flatten_errors(value, (*prefix, str(key))))
    elif isinstance(errors, list):
        for item in errors:
            if isinstance(item, (dict, list)):
                flat.extend(_flatten_errors(item, prefix))
            else:
                path = "_".join(p for p in prefix if not p.isdigit())
                flat.append((_csv_column(path), str(item)))
    return flat


def shipments_import(
    *, rows: list[dict], actor=None, source: str = "api"
) -> ImportResult:
    """Validate and create every row, or nothing. Row numbers start at 1."""
    result = ImportResult()
    if len(rows) > MAX_ROWS:
        result.errors.append(
            {"row": None, "column": None, "message": f"At most {MAX_ROWS} rows."}
        )
        return result
    serializers = []
    seen: dict[tuple[str, str], int] = {}
    for number, row in enumerate(rows, start=1):
        serializer = ShipmentInputSerializer(data=row)
        if not serializer.is_valid():
            for column, message in _flatten_errors(serializer.errors):
                result.errors.append(
                    {"row": number, "column": column, "message": message}
                )
            continue
        key = (
            str(serializer.validated_data["shipper"].pk),
            serializer.validated_data["reference"],
        )
        if key in seen:
            result.errors.append(
                {
                    "row": number,
                    "column": "reference",
                    "message": f"Duplicate of row {seen[key]} in this upload.",
                }
            )
            continue
        seen[key] = number
        serializers.append((number, serializer))
    if result.errors:
        return result
    with transaction.atomic():
        for number, serializer in serializers:
            try:  # the service's own savepoint undoes a refused row
                created = shipment_create_from_input(
                    data=serializer.validated_data, actor=actor, source=source
                )
                result.created.append(created)
            except DomainError as exc:
                result.errors.append(
                    {"row": number, "column": exc.field, "message": exc.message}
                )
        if result.errors:
            transaction.set_rollback(True)
            result.created = []
    return result
