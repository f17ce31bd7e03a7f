"""What AWS clients put on the wire, read the same way by every API coldbrew serves: the region a
request is signed for, and request bodies under a size limit. Below the gateway and the services,
so that each of them can use it without importing the other."""
