"""Authentication and authorization: access keys, their IAM-style policies, SigV4 (and S3's
SigV2) verification, and which action on which resource each request is.

The ASGI middleware that applies them is :mod:`coldbrew.gateway.auth_gate`; ``coldbrew keys``
(:mod:`coldbrew.auth.cli`) manages the keys file.
"""
