/* The chat page's scripts and style sheets, compiled into the binary at build time (see
 * CMakeLists.txt: marked from Debian's libjs-marked, highlight.js and one of its styles from
 * libjs-highlight.js). GET /assets/NAME answers them; an asset that was not installed when pagoda
 * was built answers 404, and the page falls back to plain text. HTTP threads only. */
#ifndef PG_SERVE_PAGE_ASSETS_H
#define PG_SERVE_PAGE_ASSETS_H

#include <microhttpd.h>

#include "serve/request.h"

/* url: the request path, starting with "/assets/". */
enum MHD_Result send_page_asset(http_req *hr, const char *url);

#endif
