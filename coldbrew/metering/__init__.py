"""Metering: a record per invocation, CloudWatch-named metrics, and what the traffic costs."""

from __future__ import annotations

from coldbrew.metering.meter import Meter
from coldbrew.metering.prices import PriceTable, load_prices
from coldbrew.metering.records import MeterRecord, Outcome

__all__ = ["Meter", "MeterRecord", "Outcome", "PriceTable", "load_prices"]
