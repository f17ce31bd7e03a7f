"""S3's XML: the documents the store answers with, and the few it reads (bounded, no entities).

Requests' XML bodies are capped in size before they are parsed (:mod:`coldbrew.s3.body`), and
expat (2.4.1 and later, which CPython bundles) refuses entity expansion attacks, so a hostile
document costs a 400, not memory.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from urllib.parse import quote

from .errors import MalformedXML, S3Error

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
OWNER_NAME = "coldbrew"


def iso_time(epoch: float) -> str:
    """S3's timestamp in XML: ``2026-12-02T10:20:30.123Z``."""
    whole = int(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((epoch - whole) * 1000):03d}Z"


def document(root: str, children: Iterable[ET.Element] = (), /, **text: str | int | bool | None) -> bytes:
    """``<root xmlns=...><Name>text</Name>...children</root>`` as UTF-8 bytes with a declaration."""
    element = ET.Element(root, xmlns=NAMESPACE)
    add(element, **text)
    element.extend(children)
    return ET.tostring(element, encoding="utf-8", xml_declaration=True)


def text_document(root: str, text: str) -> bytes:
    element = ET.Element(root, xmlns=NAMESPACE)
    element.text = text
    return ET.tostring(element, encoding="utf-8", xml_declaration=True)


def node(tag: str, children: Iterable[ET.Element] = (), /, **text: str | int | bool | None) -> ET.Element:
    element = ET.Element(tag)
    add(element, **text)
    element.extend(children)
    return element


def add(parent: ET.Element, **text: str | int | bool | None) -> None:
    """Child elements in the order given; None is left out, as S3 leaves out absent members."""
    for tag, value in text.items():
        if value is None:
            continue
        child = ET.SubElement(parent, tag)
        child.text = ("true" if value else "false") if isinstance(value, bool) else str(value)


def owner(account_id: str) -> ET.Element:
    return node("Owner", ID=account_id, DisplayName=OWNER_NAME)


def error_document(error: S3Error, request_id: str, resource: str) -> bytes:
    element = ET.Element("Error")
    add(element, Code=error.code, Message=error.message)
    add(element, **{k: str(v) for k, v in error.fields.items()})
    add(element, Resource=resource, RequestId=request_id, HostId=request_id)
    return ET.tostring(element, encoding="utf-8", xml_declaration=True)


def url_encoded(value: str, encode: bool) -> str:
    """A key as ListObjects returns it with ``encoding-type=url`` (botocore decodes it with unquote_plus)."""
    return quote(value, safe="/~") if encode else value


def parse(body: bytes, root: str) -> ET.Element:
    """A request document whose root element is ``root`` (any namespace)."""
    try:
        element = ET.fromstring(body)
    except ET.ParseError:
        raise MalformedXML() from None
    if local(element.tag) != root:
        raise MalformedXML()
    return element


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if local(child.tag) == name]


def child_text(element: ET.Element, name: str) -> str | None:
    for child in element:
        if local(child.tag) == name:
            return child.text or ""
    return None
