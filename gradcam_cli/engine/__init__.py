"""The compiled explainer and the library front end (:class:`GradCAM`)."""
