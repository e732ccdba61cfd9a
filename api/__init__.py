"""REST API over ``DeepLearningService`` (extra ``serve``; ``make serve``)."""
