from django.db import migrations

APPEND_ONLY_SQL = """
CREATE OR REPLACE FUNCTION allmile_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'shipment events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER shipment_event_append_only
    BEFORE UPDATE OR DELETE ON shipments_shipmentevent
    FOR EACH ROW EXECUTE FUNCTION allmile_events_append_only();
"""
DROP_SQL = """
DROP TRIGGER IF EXISTS shipment_event_append_only ON shipments_shipmentevent;
DROP FUNCTION IF EXISTS allmile_events_append_only();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(APPEND_ONLY_SQL, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_SQL, params=None)


def create_role_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ("dispatcher", "driver"):
        Group.objects.get_or_create(name=name)


class Migration(migrations.Migration):
    dependencies = [
        ("shipments", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunPython(forwards, backwards),
        migrations.RunPython(create_role_groups, migrations.RunPython.noop),
    ]
