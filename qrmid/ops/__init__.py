"""Operations: configuration, paths, logging and service-manager integration."""
