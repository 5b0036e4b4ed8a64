// Starts Swagger UI on /docs. Loaded after swagger-ui-bundle.js (served by this server, from
// the fastapi-offline package); reads the OpenAPI URL from the page, so the page needs no
// inline script. validatorUrl: null keeps Swagger UI from calling its online validator.
"use strict";
(function () {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
