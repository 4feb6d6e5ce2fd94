"""Cluster mode: SWIM + Lifeguard membership that speaks memberlist's wire protocol."""
