"""Peer discovery: where a member looks for others besides ``cluster_config.peers``.

One module per backend (static, dns, kubernetes, consul, etcd, udp, mdns), each behind
the small :class:`~rainbridge.cluster.discovery.base.Discovery` interface. The cluster
service asks the configured backend for candidates each round and when members are lost;
every candidate passes the allowed-address-space filter before a packet is sent to it.
"""
