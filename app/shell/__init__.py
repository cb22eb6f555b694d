"""The page shell: the shared stores, header and banner, the two columns, the URL and the context."""
