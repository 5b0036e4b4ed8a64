// Starts ReDoc on /redoc. Loaded after redoc.standalone.js (served by this server, from the
// fastapi-offline package); reads the OpenAPI URL from the page, so the page needs no inline
// script. No web fonts: ReDoc falls back to the system's sans-serif and monospace fonts.
"use strict";
(function () {
  const root = document.getElementById("redoc");
  Redoc.init(root.dataset.openapiUrl, { hideDownloadButton: false }, root);
})();
