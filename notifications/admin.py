"""Admin: rules and their wording (with a preview on a real shipment), the
delivery log, opt-outs, and what customers told us."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin
from django.db.models import Q
from django.shortcuts import get_object_or_404
from django.template import TemplateDoesNotExist, TemplateSyntaxError
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from shipments.models import Shipment

from .models import (
    CustomerRating,
    DeliveryInstruction,
    HubPickupRequest,
    Message,
    MessageTemplate,
    NotificationOptOut,
    NotificationRule,
)
from .rendering import TemplateMissing, default_template_source, message_preview
from .services import notification_opt_out_create


class PreviewForm(forms.Form):
    shipment = forms.CharField(
        max_length=64,
        help_text="A shipment reference or id: the preview uses its real data.",
    )
    language = forms.ChoiceField(
        choices=[("", "All languages"), *settings.LANGUAGES], required=False
    )

    def clean_shipment(self) -> Shipment:
        value = self.cleaned_data["shipment"].strip()
        condition = Q(reference=value)
        if value.isdigit():
            condition |= Q(pk=int(value))
        shipment = (
            Shipment.objects.filter(condition)
            .select_related("shipper", "consignee", "destination", "destination_hub")
            .order_by("-id")
            .first()
        )
        if shipment is None:
            raise forms.ValidationError("No shipment with this reference or id.")
        return shipment


class MessageTemplateInline(admin.StackedInline):
    model = MessageTemplate
    extra = 0
    fields = ["language", "subject", "body"]


@admin.register(NotificationRule)
class NotificationRuleAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "trigger",
        "recipient_role",
        "channel",
        "is_active",
        "min_interval_minutes",
        "quiet_hours_start",
        "quiet_hours_end",
        "preview_link",
    ]
    list_filter = ["trigger", "channel", "recipient_role", "is_active"]
    list_editable = ["is_active"]
    search_fields = ["name"]
    readonly_fields = ["default_wording"]
    inlines = [MessageTemplateInline]
    fieldsets = [
        (
            None,
            {"fields": ["name", "trigger", "recipient_role", "channel", "is_active"]},
        ),
        (
            "How often and when",
            {
                "fields": [
                    "min_interval_minutes",
                    "eta_threshold_minutes",
                    ("quiet_hours_start", "quiet_hours_end"),
                ]
            },
        ),
        (
            "Shipped wording (used when the rule has no template in a language)",
            {"fields": ["default_wording"]},
        ),
    ]

    @admin.display(description="Default wording")
    def default_wording(self, rule: NotificationRule) -> str:
        if not rule.pk:
            return "Save the rule to see its default wording."
        blocks = []
        for code, label in settings.LANGUAGES:
            source = default_template_source(
                trigger=rule.trigger, channel=rule.channel, language=code
            )
            blocks.append(
                format_html(
                    "<h4>{}</h4><pre style='white-space: pre-wrap'>{}</pre>",
                    label,
                    source or "—",
                )
            )
        return format_html("".join(["{}"] * len(blocks)), *blocks)

    @admin.display(description="Preview")
    def preview_link(self, rule: NotificationRule) -> str:
        url = reverse("admin:notifications_notificationrule_preview", args=[rule.pk])
        return format_html('<a href="{}">Preview</a>', url)

    def get_urls(self):
        return [
            path(
                "<int:rule_id>/preview/",
                self.admin_site.admin_view(self.preview_view),
                name="notifications_notificationrule_preview",
            ),
            *super().get_urls(),
        ]

    def preview_view(self, request, rule_id: int):
        rule = get_object_or_404(NotificationRule, pk=rule_id)
        form = PreviewForm(request.GET or None)
        previews = []
        if form.is_valid():
            shipment = form.cleaned_data["shipment"]
            languages = (
                [form.cleaned_data["language"]]
                if form.cleaned_data["language"]
                else [code for code, _ in settings.LANGUAGES]
            )
            labels = dict(settings.LANGUAGES)
            for language in languages:
                item = {
                    "language": language,
                    "language_label": labels[language],
                    "used": language,
                }
                try:
                    item["subject"], item["body"], item["used"] = message_preview(
                        rule=rule, shipment=shipment, language=language
                    )
                except (
                    TemplateMissing,
                    TemplateSyntaxError,
                    TemplateDoesNotExist,
                ) as exc:
                    item["error"] = f"This wording cannot be rendered: {exc}"
                previews.append(item)
        return TemplateResponse(
            request,
            "notifications/admin/preview.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": f"Preview: {rule}",
                "rule": rule,
                "form": form,
                "previews": previews,
            },
        )


@admin.register(MessageTemplate)
class MessageTemplateAdmin(admin.ModelAdmin):
    list_display = ["rule", "language", "subject", "updated_at", "preview_link"]
    list_filter = ["language", "rule__trigger", "rule__channel"]
    search_fields = ["rule__name", "subject", "body"]

    @admin.display(description="Preview")
    def preview_link(self, template: MessageTemplate) -> str:
        url = reverse(
            "admin:notifications_notificationrule_preview", args=[template.rule_id]
        )
        return format_html(
            '<a href="{}?language={}">Preview</a>', url, template.language
        )


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """The delivery log: read-only."""

    list_display = [
        "id",
        "created_at",
        "shipment",
        "rule",
        "channel",
        "recipient",
        "status",
        "attempts",
        "reason",
    ]
    list_filter = ["status", "channel", "rule__trigger"]
    search_fields = ["shipment__reference", "recipient", "provider_message_id"]
    list_select_related = ["shipment", "rule"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(NotificationOptOut)
class NotificationOptOutAdmin(admin.ModelAdmin):
    list_display = ["channel", "address", "source", "created_at"]
    list_filter = ["channel", "source"]
    search_fields = ["address"]
    fields = ["channel", "address"]

    def save_model(self, request, obj, form, change) -> None:
        # Through the service: it also stops messages already waiting for this address.
        saved = notification_opt_out_create(
            channel=obj.channel, address=obj.address, source="dashboard"
        )
        obj.pk = saved.pk


@admin.register(DeliveryInstruction)
class DeliveryInstructionAdmin(admin.ModelAdmin):
    list_display = ["shipment", "safe_place", "note", "updated_at"]
    search_fields = ["shipment__reference"]
    readonly_fields = ["shipment", "safe_place", "door_code", "note", "updated_at"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(HubPickupRequest)
class HubPickupRequestAdmin(admin.ModelAdmin):
    list_display = ["shipment", "hub", "status", "created_at"]
    list_filter = ["status", "hub"]
    search_fields = ["shipment__reference"]
    readonly_fields = ["shipment", "hub", "created_at"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(CustomerRating)
class CustomerRatingAdmin(admin.ModelAdmin):
    list_display = ["shipment", "stars", "comment", "created_at"]
    list_filter = ["stars"]
    search_fields = ["shipment__reference", "comment"]
    readonly_fields = ["shipment", "stars", "comment", "created_at"]

    def has_add_permission(self, request) -> bool:
        return False
