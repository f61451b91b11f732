"""Token providers: one module each behind ``base.Provider``, listed in ``registry``."""
