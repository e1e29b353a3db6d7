"""Operations adapters: systemd notification, Prometheus metrics, persisted state, atomic writes."""
