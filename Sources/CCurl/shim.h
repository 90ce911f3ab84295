#ifndef PORTCULLIS_CCURL_SHIM_H
#define PORTCULLIS_CCURL_SHIM_H
// Swift cannot call C variadic functions, so every curl_*_setopt / getinfo form we use gets a typed
// static inline wrapper here. Keep this file free of logic.
#include <curl/curl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

static inline CURLcode ccurl_easy_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode ccurl_easy_setopt_off(CURL *h, CURLoption o, curl_off_t v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode ccurl_easy_setopt_ptr(CURL *h, CURLoption o, void *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode ccurl_easy_setopt_str(CURL *h, CURLoption o, const char *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode ccurl_easy_setopt_slist(CURL *h, CURLoption o, struct curl_slist *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode ccurl_easy_setopt_write_cb(CURL *h, CURLoption o, curl_write_callback v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode ccurl_easy_setopt_read_cb(CURL *h, CURLoption o, curl_read_callback v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode ccurl_easy_getinfo_long(CURL *h, CURLINFO i, long *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode ccurl_easy_getinfo_ptr(CURL *h, CURLINFO i, void **v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode ccurl_easy_getinfo_off(CURL *h, CURLINFO i, curl_off_t *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLMcode ccurl_multi_setopt_long(CURLM *m, CURLMoption o, long v) { return curl_multi_setopt(m, o, v); }
static inline CURLMcode ccurl_multi_setopt_ptr(CURLM *m, CURLMoption o, void *v) { return curl_multi_setopt(m, o, v); }
static inline CURLMcode ccurl_multi_setopt_socket_cb(CURLM *m, CURLMoption o, curl_socket_callback v) { return curl_multi_setopt(m, o, v); }
static inline CURLMcode ccurl_multi_setopt_timer_cb(CURLM *m, CURLMoption o, curl_multi_timer_callback v) { return curl_multi_setopt(m, o, v); }

// CURLMsg is a struct with a union; Swift imports the union awkwardly, so read it here.
static inline CURL *ccurl_msg_easy(const CURLMsg *m) { return m->easy_handle; }
static inline CURLcode ccurl_msg_result(const CURLMsg *m) { return m->data.result; }
static inline int ccurl_msg_is_done(const CURLMsg *m) { return m->msg == CURLMSG_DONE; }

// Macros that Swift does not import as constants.
static inline size_t ccurl_writefunc_pause(void) { return CURL_WRITEFUNC_PAUSE; }
static inline size_t ccurl_readfunc_pause(void) { return CURL_READFUNC_PAUSE; }
static inline size_t ccurl_readfunc_abort(void) { return CURL_READFUNC_ABORT; }
static inline curl_socket_t ccurl_socket_timeout(void) { return CURL_SOCKET_TIMEOUT; }

// Pause bitmasks (curl.h builds them from other macros).
static inline int ccurl_pause_recv(void) { return CURLPAUSE_RECV; }
static inline int ccurl_pause_send(void) { return CURLPAUSE_SEND; }

// CURLINFO_ACTIVESOCKET takes a curl_socket_t *, not a long *.
static inline CURLcode ccurl_easy_getinfo_socket(CURL *h, curl_socket_t *v) { return curl_easy_getinfo(h, CURLINFO_ACTIVESOCKET, v); }
// The running library's version (which may differ from the headers built against): CURLVERSION_NOW is a macro.
static inline unsigned int ccurl_version_num(void) { return curl_version_info(CURLVERSION_NOW)->version_num; }
static inline const char *ccurl_version_text(void) { return curl_version_info(CURLVERSION_NOW)->version; }
static inline int ccurl_version_has_http2(void) { return (curl_version_info(CURLVERSION_NOW)->features & CURL_VERSION_HTTP2) != 0; }

// Extra typed setopt forms.
static inline CURLcode ccurl_easy_setopt_header_cb(CURL *h, curl_write_callback v) { return curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, v); }

// OpenSSL must be told not to install its atexit handler before curl_global_init: at exit it would tear down
// its state while the curl watcher thread and event loops may still be using TLS connections.
// Looked up dynamically so we do not need to link libcrypto ourselves; returns 1 when the call was made.
#include <dlfcn.h>
static inline int ccurl_openssl_init_no_atexit(void) {
    typedef int (*init_fn)(unsigned long long, const void *);
    void *self = dlopen(NULL, RTLD_NOW);
    void *sym = self ? dlsym(self, "OPENSSL_init_crypto") : NULL;
    if (!sym) {
        void *crypto = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_NOLOAD);
        sym = crypto ? dlsym(crypto, "OPENSSL_init_crypto") : NULL;
    }
    if (!sym) return 0;
    ((init_fn)sym)(0x00080000ULL /* OPENSSL_INIT_NO_ATEXIT */, NULL);
    return 1;
}

// epoll without the packed struct in Swift.
static inline uint32_t ccurl_epollin(void) { return EPOLLIN; }
static inline uint32_t ccurl_epollout(void) { return EPOLLOUT; }
static inline uint32_t ccurl_epollerr(void) { return EPOLLERR; }
static inline uint32_t ccurl_epollhup(void) { return EPOLLHUP; }
static inline uint32_t ccurl_epolloneshot(void) { return EPOLLONESHOT; }
static inline int ccurl_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &ev);
}
/// Waits and unpacks up to `max` events into parallel arrays. Returns epoll_wait's result.
static inline int ccurl_epoll_wait(int epfd, uint64_t *datas, uint32_t *events, int max, int timeout) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epfd, evs, max, timeout);
    for (int i = 0; i < n; i++) { datas[i] = evs[i].data.u64; events[i] = evs[i].events; }
    return n;
}

#endif
