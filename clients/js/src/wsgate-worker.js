// wsgate's shared worker: one connection for all of a site's tabs (createClient({shared: true})).
// Browsers run a SharedWorker only from the page's own origin: serve these two lines from your site, with your edge's URL.
importScripts("/client.js");
wsgate.serveSharedWorker(self);
