"""Session payload codecs.

:mod:`sa_sessions.codec.tagged` is the tagged-JSON codec (cookies, and optionally server blobs);
:mod:`sa_sessions.codec.blob` seals server blobs (MAC, header, restricted pickle or tagged JSON).
Kept import-free so that importing the cookie codec never drags pickle in.
"""
