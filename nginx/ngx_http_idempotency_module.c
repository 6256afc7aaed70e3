
/*
 * ngx_http_idempotency_module.c — directives, configuration, variables, the
 * per-worker store and the precontent handler that decides what a request
 * meets: bypass, a replay, an error, a wait, or a claim and the proxy.
 *
 * The handler runs in the PRECONTENT phase, after nginx's access checks
 * (auth_basic, auth_request, allow/deny), so a replay is never served to a
 * client that could not have made the request.
 */

#include "ngx_http_idempotency.h"

#include <sys/time.h>


static ngx_int_t ngx_http_idempotency_handler(ngx_http_request_t *r);
static void ngx_http_idempotency_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_idempotency_decide(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static ngx_uint_t ngx_http_idempotency_is_key_header(
    ngx_http_idempotency_loc_conf_t *ilcf, ngx_str_t *name);
static ngx_int_t ngx_http_idempotency_find_key(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_http_idempotency_loc_conf_t *ilcf);
static ngx_int_t ngx_http_idempotency_fingerprint(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static ngx_int_t ngx_http_idempotency_answer_now(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static ngx_int_t ngx_http_idempotency_peek(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static void ngx_http_idempotency_wait_handler(ngx_event_t *ev);
static void ngx_http_idempotency_conflict(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, int64_t lease_until_ms);
static void ngx_http_idempotency_cleanup(void *data);

static void ngx_http_idempotency_client_request(ngx_http_request_t *r,
    ngx_str_t *method, ngx_str_t *path);
static ngx_int_t ngx_http_idempotency_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_idempotency_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_idempotency_init_process(ngx_cycle_t *cycle);
static void ngx_http_idempotency_exit_process(ngx_cycle_t *cycle);
static void *ngx_http_idempotency_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_idempotency_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_idempotency_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_idempotency_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_idempotency_scope_add(ngx_conf_t *cf,
    ngx_array_t *scope, ngx_str_t *value);
static char *ngx_http_idempotency_scope_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_array_t *ngx_http_idempotency_conf_array(ngx_conf_t *cf,
    char *field, size_t size);
static char *ngx_http_idempotency_status_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_idempotency_lowcase_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_idempotency_location_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_idempotency_fp_ignore_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_idempotency_error_template_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static void ngx_http_idempotency_error_template_free(void *data);
static char *ngx_http_idempotency_store_url_check(ngx_conf_t *cf,
    void *post, void *data);


static ngx_conf_post_t  ngx_http_idempotency_store_post = {
    ngx_http_idempotency_store_url_check
};


static ngx_conf_bitmask_t  ngx_http_idempotency_methods_mask[] = {
    { ngx_string("POST"), NGX_HTTP_POST },
    { ngx_string("PATCH"), NGX_HTTP_PATCH },
    { ngx_string("PUT"), NGX_HTTP_PUT },
    { ngx_string("DELETE"), NGX_HTTP_DELETE },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_idempotency_streams[] = {
    { ngx_string("auto"), NGX_HTTP_IDEM_STREAM_AUTO },
    { ngx_string("pass"), NGX_HTTP_IDEM_STREAM_PASS },
    { ngx_string("hold"), NGX_HTTP_IDEM_STREAM_HOLD },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_idempotency_on_unknown[] = {
    { ngx_string("store"), IDEM_ON_UNKNOWN_STORE },
    { ngx_string("release"), IDEM_ON_UNKNOWN_RELEASE },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_idempotency_error_styles[] = {
    { ngx_string("persona"), IDEM_STYLE_PERSONA },
    { ngx_string("ietf"), IDEM_STYLE_IETF },
    { ngx_string("stripe"), IDEM_STYLE_STRIPE },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_idempotency_commands[] = {

    { ngx_string("idempotency_store"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_idempotency_main_conf_t, store_url),
      &ngx_http_idempotency_store_post },

    { ngx_string("idempotency_thread_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_idempotency_main_conf_t, thread_pool_name),
      NULL },

    { ngx_string("idempotency_prune_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_idempotency_main_conf_t, prune_interval),
      NULL },

    { ngx_string("idempotency_prune_budget"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_idempotency_main_conf_t, prune_budget),
      NULL },

    { ngx_string("idempotency"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idempotency_loc_conf_t, enable),
      NULL },

    { ngx_string("idempotency_methods"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_conf_set_bitmask_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idempotency_loc_conf_t, methods),
      &ngx_http_idempotency_methods_mask },

    { ngx_string("idempotency_scope"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_idempotency_scope_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idempotency_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idempotency_loc_conf_t, ttl),
      NULL },

    { ngx_string("idempotency_wait"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idempotency_loc_conf_t, wait),
      NULL },

    { ngx_string("idempotency_lease"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idempotency_loc_conf_t, lease),
      NULL },

    { ngx_string("idempotency_on_unknown"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idempotency_loc_conf_t, on_unknown),
      &ngx_http_idempotency_on_unknown },

    { ngx_string("idempotency_error_style"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idempotency_loc_conf_t, error_style),
      &ngx_http_idempotency_error_styles },

    { ngx_string("idempotency_error_template"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_idempotency_error_template_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idempotency_stream"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idempotency_loc_conf_t, stream),
      &ngx_http_idempotency_streams },

    { ngx_string("idempotency_require_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idempotency_loc_conf_t, require_key),
      NULL },

    { ngx_string("idempotency_max_response_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idempotency_loc_conf_t, max_response_size),
      NULL },

    { ngx_string("idempotency_no_store_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_idempotency_lowcase_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idempotency_loc_conf_t, no_store_headers),
      NULL },

    { ngx_string("idempotency_release_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_idempotency_status_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idempotency_loc_conf_t, release_statuses),
      NULL },

    { ngx_string("idempotency_key_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_idempotency_lowcase_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idempotency_loc_conf_t, key_headers),
      NULL },

    { ngx_string("idempotency_fingerprint_ignore"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_idempotency_fp_ignore_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idempotency_loc_conf_t, fp_ignore),
      NULL },

    { ngx_string("idempotency_fingerprint_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_idempotency_lowcase_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idempotency_loc_conf_t, fp_headers),
      NULL },

    { ngx_string("idempotency_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_idempotency_location_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idempotency_loc_conf_t, metrics),
      NULL },

    { ngx_string("idempotency_admin"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_idempotency_location_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idempotency_loc_conf_t, admin),
      NULL },

    { ngx_string("idempotency_health"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_idempotency_location_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idempotency_loc_conf_t, health),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_idempotency_module_ctx = {
    ngx_http_idempotency_add_variables,    /* preconfiguration */
    ngx_http_idempotency_init,             /* postconfiguration */

    ngx_http_idempotency_create_main_conf, /* create main configuration */
    ngx_http_idempotency_init_main_conf,   /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_idempotency_create_loc_conf,  /* create location configuration */
    ngx_http_idempotency_merge_loc_conf    /* merge location configuration */
};


ngx_module_t  ngx_http_idempotency_module = {
    NGX_MODULE_V1,
    &ngx_http_idempotency_module_ctx,      /* module context */
    ngx_http_idempotency_commands,         /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_idempotency_init_process,     /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_idempotency_exit_process,     /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_str_t  ngx_http_idempotency_header = ngx_string("Idempotency-Key");


int64_t
ngx_http_idempotency_now_ms(void)
{
    struct timeval  tv;

    ngx_gettimeofday(&tv);

    return (int64_t) tv.tv_sec * 1000 + tv.tv_usec / 1000;
}


/*
 * The module's context survives internal redirects (error_page, named
 * locations) through the request pool's cleanup list, which nginx keeps
 * while it clears r->ctx.
 */

ngx_http_idempotency_ctx_t *
ngx_http_idempotency_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t          *cln;
    ngx_http_idempotency_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_idempotency_module);
    if (ctx != NULL || !r->internal) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_idempotency_cleanup) {
            ctx = cln->data;
            ngx_http_set_ctx(r, ctx, ngx_http_idempotency_module);
            return ctx;
        }
    }

    return NULL;
}


static ngx_http_idempotency_ctx_t *
ngx_http_idempotency_create_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t          *cln;
    ngx_http_idempotency_ctx_t  *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_idempotency_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_idempotency_cleanup;
    cln->data = ctx;

    ctx->request = r;
    ctx->conf = ngx_http_get_module_loc_conf(r, ngx_http_idempotency_module);
    ngx_http_set_ctx(r, ctx, ngx_http_idempotency_module);

    return ctx;
}


/*
 * The request is gone. A claim it still holds was never completed: the
 * response did not arrive whole (upstream reset after the header, client
 * and upstream both lost). Settle it off the event loop, without r.
 */

static void
ngx_http_idempotency_cleanup(void *data)
{
    ngx_http_idempotency_ctx_t  *ctx = data;

    if (ctx->wait_event.timer_set) {
        ngx_del_timer(&ctx->wait_event);
    }

    ngx_http_idempotency_unlist_claim(ctx);
    ngx_http_idempotency_claim_ended(ctx);

    if (ctx->owner != 0 && !ctx->finished
        && (ctx->state == NGX_HTTP_IDEM_CLAIMED
            || ctx->state == NGX_HTTP_IDEM_HOLDING
            || ctx->state == NGX_HTTP_IDEM_STREAMING))
    {
        ngx_http_idempotency_post_detached_finish(ctx,
                                                  ngx_cycle->log);
    }

    if (ctx->has_result) {
        idem_result_free(&ctx->result);
        ctx->has_result = 0;
    }

    if (ctx->errbody.body) {
        free(ctx->errbody.body);
        ctx->errbody.body = NULL;
    }

    if (ctx->body) {
        free(ctx->body);
        ctx->body = NULL;
    }

    ctx->request = NULL;
}


idem_store_t *
ngx_http_idempotency_store(ngx_http_idempotency_main_conf_t *mcf,
    ngx_log_t *log)
{
    int  rc;

    if (mcf->store != NULL) {
        return mcf->store;
    }

    if (ngx_current_msec < mcf->store_retry_at) {
        return NULL;
    }

    rc = idem_store_open((char *) mcf->store_url.data, &mcf->store);
    if (rc != 0) {
        mcf->store = NULL;
        mcf->store_open_rc = rc;
        mcf->store_retry_at = ngx_current_msec + 1000;
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "idempotency store \"%V\" unavailable: %s",
                      &mcf->store_url, idem_strerror(rc));
        return NULL;
    }

    ngx_http_idempotency_store_opened(mcf, log);

    return mcf->store;
}


static ngx_int_t
ngx_http_idempotency_handler(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_http_idempotency_ctx_t       *ctx;
    ngx_http_idempotency_loc_conf_t  *ilcf;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_idempotency_get_ctx(r);

    if (ctx != NULL) {
        switch (ctx->state) {

        case NGX_HTTP_IDEM_BODY:
            return ngx_http_idempotency_decide(r, ctx);

        case NGX_HTTP_IDEM_ANSWER:
        case NGX_HTTP_IDEM_WAITING:
            return ngx_http_idempotency_answer_now(r, ctx);

        case NGX_HTTP_IDEM_TASK:
            return NGX_DONE;

        default:
            /* claimed, or an internal redirect after the decision */
            return NGX_DECLINED;
        }
    }

    ilcf = ngx_http_get_module_loc_conf(r, ngx_http_idempotency_module);

    /* an internal redirect (rewrite, try_files) takes part like any other
     * request; one that already decided has its context back from
     * ngx_http_idempotency_get_ctx() */
    if (!ilcf->enable) {
        return NGX_DECLINED;
    }

    if (!(r->method & ilcf->methods)) {
        /* no context: the variables read its absence as "bypass" */
        ngx_http_idempotency_count(NGX_HTTP_IDEM_M_BYPASS, 1);
        return NGX_DECLINED;
    }

    ctx = ngx_http_idempotency_create_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_idempotency_find_key(r, ctx, ilcf);

    if (rc == NGX_DECLINED) {
        ctx->outcome = NGX_HTTP_IDEM_OUT_BYPASS;
        ctx->state = NGX_HTTP_IDEM_DONE;
        ngx_http_idempotency_count(NGX_HTTP_IDEM_M_BYPASS, 1);
        return NGX_DECLINED;
    }

    if (rc != NGX_OK) {
        return rc;
    }

    if (ctx->state == NGX_HTTP_IDEM_ANSWER) {
        return ngx_http_idempotency_answer_now(r, ctx);
    }

    if (ngx_http_idempotency_scope_hash(r, ilcf, &ctx->scope) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_idempotency_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);
    return NGX_DONE;
}


static void
ngx_http_idempotency_body_handler(ngx_http_request_t *r)
{
    ngx_http_idempotency_ctx_t  *ctx;

    ctx = ngx_http_idempotency_get_ctx(r);

    ctx->state = NGX_HTTP_IDEM_BODY;
    r->preserve_body = 1;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


/* Whether a request header named name carries the key under ilcf. */

static ngx_uint_t
ngx_http_idempotency_is_key_header(ngx_http_idempotency_loc_conf_t *ilcf,
    ngx_str_t *name)
{
    ngx_str_t   *names;
    ngx_uint_t   i;

    if (name->len == ngx_http_idempotency_header.len
        && ngx_strncasecmp(name->data, ngx_http_idempotency_header.data,
                           name->len) == 0)
    {
        return 1;
    }

    if (ilcf->key_headers == NULL) {
        return 0;
    }

    names = ilcf->key_headers->elts;

    for (i = 0; i < ilcf->key_headers->nelts; i++) {
        if (name->len == names[i].len
            && ngx_strncasecmp(name->data, names[i].data, name->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * Finds and parses the key header(s): Idempotency-Key and those of
 * idempotency_key_header; every one present must carry the same key.
 * NGX_DECLINED: no key and none required. NGX_OK: ctx->key is set, or
 * ctx->answer holds a 400 (a bad or missing key, or a request target with
 * a fragment).
 */

static ngx_int_t
ngx_http_idempotency_find_key(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_http_idempotency_loc_conf_t *ilcf)
{
    int               err;
    size_t            len;
    ngx_uint_t        i, found;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;
    idem_err_kind_t   kind;
    u_char            key[IDEM_KEY_MAX];

    found = 0;
    err = 0;
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (!ngx_http_idempotency_is_key_header(ilcf, &h[i].key)) {
            continue;
        }

        err = idem_key_parse((char *) h[i].value.data, h[i].value.len,
                             (char *) key, &len);
        if (err != 0) {
            break;
        }

        if (found
            && (len != ctx->key_len || ngx_memcmp(key, ctx->key, len) != 0))
        {
            err = IDEM_EKEYDUP;
            break;
        }

        ngx_memcpy(ctx->key, key, len);
        ctx->key_len = len;
        found = 1;
    }

    if (err == 0 && !found) {
        if (!ilcf->require_key) {
            return NGX_DECLINED;
        }

        err = IDEM_EKEYMISSING;
    }

    if (err != 0) {
        kind = (err == IDEM_EKEYMISSING) ? IDEM_ERR_KEY_MISSING
                                         : IDEM_ERR_KEY_INVALID;

    } else if (ngx_strlchr(r->unparsed_uri.data,
                           r->unparsed_uri.data + r->unparsed_uri.len, '#')
               != NULL)
    {
        /*
         * nginx forwards the target whole, fragment included, while its
         * arguments stop at the '#': such a request is refused rather than
         * fingerprinted in part (README "What the fingerprint compares")
         */
        kind = IDEM_ERR_TARGET_FRAGMENT;

    } else {
        return NGX_OK;
    }

    ctx->outcome = NGX_HTTP_IDEM_OUT_INVALID;
    ngx_http_idempotency_count(NGX_HTTP_IDEM_M_INVALID, 1);

    if (ngx_http_idempotency_error_answer(r, ctx, kind, err) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the body is not needed: discard it so keepalive stays possible */
    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    return NGX_OK;
}


/* The scope of a request under ilcf: the hash of its scope values. */

ngx_int_t
ngx_http_idempotency_scope_hash(ngx_http_request_t *r,
    ngx_http_idempotency_loc_conf_t *ilcf, idem_hash_t *out)
{
    ngx_str_t                            val;
    ngx_uint_t                           i, n, absent;
    idem_str_t                           values[8];
    ngx_http_variable_value_t           *vv;
    ngx_http_idempotency_scope_value_t  *sv;

    static ngx_uint_t                    warned;

    n = 0;
    absent = 0;

    if (!ilcf->scope_none && ilcf->scope != NULL) {
        sv = ilcf->scope->elts;
        n = ilcf->scope->nelts;

        for (i = 0; i < n; i++) {

            if (sv[i].index != NGX_ERROR) {
                vv = ngx_http_get_indexed_variable(r, sv[i].index);
                if (vv == NULL) {
                    return NGX_ERROR;
                }

                /* absent: data NULL; empty: "" */
                values[i].data = vv->not_found ? NULL
                                 : vv->len ? (char *) vv->data : "";
                values[i].len = vv->not_found ? 0 : vv->len;
                absent += vv->not_found;
                continue;
            }

            if (ngx_http_complex_value(r, &sv[i].value, &val) != NGX_OK) {
                return NGX_ERROR;
            }

            values[i].data = val.len ? (char *) val.data : "";
            values[i].len = val.len;
        }
    }

    if (n > 0 && absent == n && !warned) {
        /* once per worker: a setup that scopes by nothing the clients send */
        warned = 1;
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "idempotency: a request carries none of the "
                      "scope's inputs (idempotency_scope); every such "
                      "client shares one scope");
    }

    if (idem_scope_hash(values, n, out) != 0) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The value of the request header name (lowcase) for the fingerprint:
 * NULL data when the request has none, several fields of the name joined
 * by ", " in r->pool. NGX_ERROR when out of memory.
 */

static ngx_int_t
ngx_http_idempotency_fp_header(ngx_http_request_t *r, ngx_str_t *name,
    idem_str_t *value)
{
    u_char           *p;
    size_t            len;
    ngx_uint_t        i, n;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *first;

    value->data = NULL;
    value->len = 0;

    first = NULL;
    len = 0;
    n = 0;

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            if (h[i].key.len != name->len
                || ngx_strncasecmp(h[i].key.data, name->data, name->len) != 0)
            {
                continue;
            }

            if (first == NULL) {
                first = &h[i];
            }

            len += (n ? 2 : 0) + h[i].value.len;
            n++;
        }
    }

    if (first == NULL) {
        return NGX_OK;
    }

    if (n == 1) {
        value->data = first->value.len ? (char *) first->value.data : "";
        value->len = first->value.len;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    value->data = (char *) p;
    value->len = len;
    n = 0;

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            if (h[i].key.len != name->len
                || ngx_strncasecmp(h[i].key.data, name->data, name->len) != 0)
            {
                continue;
            }

            /* every field after the first, empty or not, after ", " */
            if (n++) {
                *p++ = ',';
                *p++ = ' ';
            }

            p = ngx_cpymem(p, h[i].value.data, h[i].value.len);
        }
    }

    return NGX_OK;
}


/* The parameters a fingerprint covers, but the body: method, raw path,
 * query, Content-Type and the options of idempotency_fingerprint_ignore
 * and idempotency_fingerprint_header. */

ngx_int_t
ngx_http_idempotency_request_params(ngx_http_request_t *r,
    ngx_http_idempotency_loc_conf_t *ilcf, idem_request_t *req)
{
    u_char         *q;
    ngx_str_t      *names;
    ngx_uint_t      i;
    idem_header_t  *hd;

    req->method.data = (char *) r->method_name.data;
    req->method.len = r->method_name.len;

    q = ngx_strlchr(r->unparsed_uri.data,
                    r->unparsed_uri.data + r->unparsed_uri.len, '?');

    req->path.data = (char *) r->unparsed_uri.data;
    req->path.len = q ? (size_t) (q - r->unparsed_uri.data)
                      : r->unparsed_uri.len;
    req->query.data = (char *) r->args.data;
    req->query.len = r->args.len;

    if (r->headers_in.content_type) {
        req->content_type.data =
            (char *) r->headers_in.content_type->value.data;
        req->content_type.len = r->headers_in.content_type->value.len;
    }

    if (ilcf->fp_ignore) {
        req->ignore = ilcf->fp_ignore->elts;
        req->nignore = ilcf->fp_ignore->nelts;
    }

    if (ilcf->fp_headers == NULL || ilcf->fp_headers->nelts == 0) {
        return NGX_OK;
    }

    names = ilcf->fp_headers->elts;

    hd = ngx_palloc(r->pool, ilcf->fp_headers->nelts * sizeof(idem_header_t));
    if (hd == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < ilcf->fp_headers->nelts; i++) {
        hd[i].name.data = (char *) names[i].data;
        hd[i].name.len = names[i].len;

        if (ngx_http_idempotency_fp_header(r, &names[i], &hd[i].value)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    req->headers = hd;
    req->nheaders = ilcf->fp_headers->nelts;

    return NGX_OK;
}


/*
 * The fingerprint of a small body held in memory. A body in nginx's temp
 * file, or one large enough that canonicalizing it would stall the event
 * loop, is fingerprinted on the thread pool instead (NGX_DECLINED).
 */

#define NGX_HTTP_IDEMPOTENCY_LOOP_FP_MAX  16384


static ngx_int_t
ngx_http_idempotency_fingerprint(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    u_char          *p;
    size_t           len;
    ngx_buf_t       *b;
    ngx_chain_t     *cl;
    idem_request_t   req;

    len = 0;

    if (r->request_body && r->request_body->bufs) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            b = cl->buf;

            if (b->in_file || !ngx_buf_in_memory(b)) {
                if (b->in_file && b->file_last > b->file_pos) {
                    return NGX_DECLINED;
                }

                continue;
            }

            len += b->last - b->pos;
        }
    }

    if (len > NGX_HTTP_IDEMPOTENCY_LOOP_FP_MAX) {
        return NGX_DECLINED;
    }

    ngx_memzero(&req, sizeof(idem_request_t));

    if (len) {
        cl = r->request_body->bufs;

        if (cl->next == NULL) {
            req.body = cl->buf->pos;

        } else {
            p = ngx_pnalloc(r->pool, len);
            if (p == NULL) {
                return NGX_ERROR;
            }

            req.body = p;

            for ( /* void */ ; cl; cl = cl->next) {
                if (ngx_buf_in_memory(cl->buf)) {
                    p = ngx_cpymem(p, cl->buf->pos,
                                   cl->buf->last - cl->buf->pos);
                }
            }
        }

        req.body_len = len;
    }

    if (ngx_http_idempotency_request_params(r, ctx->conf, &req) != NGX_OK) {
        return NGX_ERROR;
    }

    if (idem_fingerprint(&req, &ctx->fingerprint, NULL) != 0) {
        return NGX_ERROR;
    }

    ctx->fingerprinted = 1;

    return NGX_OK;
}


/*
 * A read of the key's record, on the event loop (an LMDB read is a memory
 * access). NGX_OK: complete with our fingerprint, ctx->answer holds the
 * replay. NGX_AGAIN: in progress with the same fingerprint and a running
 * lease, ctx->result says so. NGX_DECLINED: anything else, for begin().
 */

static ngx_int_t
ngx_http_idempotency_peek(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    int                                rc;
    int64_t                            now;
    uint64_t                           start_us;
    idem_result_t                      res;
    idem_decision_t                    d;
    ngx_http_idempotency_main_conf_t  *imcf;

    imcf = ngx_http_get_module_main_conf(r, ngx_http_idempotency_module);

    /* only a store whose reads are memory reads is read on the event loop;
       a networked one answers through begin() on the thread pool */
    if (!ctx->fingerprinted || imcf->store == NULL
        || !(idem_store_caps(imcf->store) & IDEM_STORE_CAP_INLINE_READ))
    {
        return NGX_DECLINED;
    }

    now = ngx_http_idempotency_now_ms();
    start_us = ngx_http_idempotency_now_us();

    rc = idem_store_lookup(imcf->store, &ctx->scope, (char *) ctx->key,
                           ctx->key_len, now, &res);
    if (rc != 0) {
        return NGX_DECLINED;
    }

    d = idem_decide(&res.record, &ctx->fingerprint, now);

    if (d == IDEM_DECIDE_REPLAY) {
        ngx_http_idempotency_observe(NGX_HTTP_IDEM_H_REPLAY_READ,
                                     ngx_http_idempotency_now_us()
                                     - start_us);
        res.outcome = IDEM_BEGIN_REPLAY;
        ctx->result = res;
        ctx->has_result = 1;
        ngx_http_idempotency_apply_begin(r, ctx, 0);
        return NGX_OK;
    }

    if (d == IDEM_DECIDE_IN_PROGRESS) {
        res.outcome = IDEM_BEGIN_IN_PROGRESS;
        ctx->result = res;
        ctx->has_result = 1;
        return NGX_AGAIN;
    }

    idem_result_free(&res);

    return NGX_DECLINED;
}


/*
 * The body is here: replay from a read when the key is complete, else
 * post begin() to the thread pool.
 */

static ngx_int_t
ngx_http_idempotency_decide(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    idem_store_t                      *store;
    ngx_int_t                          fp;
    ngx_http_idempotency_main_conf_t  *imcf;

    imcf = ngx_http_get_module_main_conf(r, ngx_http_idempotency_module);

    store = ngx_http_idempotency_store(imcf, r->connection->log);
    if (store == NULL) {
        ngx_http_idempotency_apply_begin(r, ctx, IDEM_EUNAVAIL);
        return ngx_http_idempotency_answer_now(r, ctx);
    }

    fp = ngx_http_idempotency_fingerprint(r, ctx);
    if (fp == NGX_ERROR) {
        ctx->state = NGX_HTTP_IDEM_DONE;
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (fp == NGX_OK) {
        switch (ngx_http_idempotency_peek(r, ctx)) {

        case NGX_OK:
            return ngx_http_idempotency_answer_now(r, ctx);

        case NGX_AGAIN:
            /* the first request runs: wait without a thread hop */
            ngx_http_idempotency_apply_begin(r, ctx, 0);
            return ngx_http_idempotency_answer_now(r, ctx);

        default:
            break;
        }
    }

    if (ngx_http_idempotency_store_failed(imcf)) {
        /* only replays from the files open: see _health.c */
        ngx_http_idempotency_apply_begin(r, ctx, IDEM_EUNAVAIL);
        return ngx_http_idempotency_answer_now(r, ctx);
    }

    if (ngx_http_idempotency_post_begin(r, ctx, fp == NGX_DECLINED)
        != NGX_OK)
    {
        ctx->state = NGX_HTTP_IDEM_DONE;
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_DONE;
}


/*
 * Turns the result of begin() (in ctx->result, or an error code) into the
 * next state: claimed, waiting, or an answer.
 */

void
ngx_http_idempotency_apply_begin(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_int_t rc)
{
    ngx_msec_t                         now;
    idem_record_t                     *rec;
    ngx_http_idempotency_loc_conf_t   *ilcf;
    ngx_http_idempotency_main_conf_t  *imcf;

    ilcf = ctx->conf;

    if (rc != 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "idempotency store error: %s", idem_strerror(rc));
        ctx->outcome = NGX_HTTP_IDEM_OUT_UNAVAILABLE;
        ngx_http_idempotency_count(NGX_HTTP_IDEM_M_UNAVAILABLE, 1);
        ngx_http_idempotency_count(NGX_HTTP_IDEM_M_STORE_ERRORS, 1);

        if (ngx_http_idempotency_error_answer(r, ctx, IDEM_ERR_STORE, 0)
            != NGX_OK)
        {
            ctx->answer.status = NGX_HTTP_SERVICE_UNAVAILABLE;
        }

        if (rc == IDEM_EFULL) {
            /* room comes back when the prune timer removes what expired:
             * retry after its next run */
            imcf = ngx_http_get_module_main_conf(r,
                                                 ngx_http_idempotency_module);
            ctx->answer.retry_after = ngx_max(1,
                                        (imcf->prune_interval + 999) / 1000);
        }

        return;
    }

    rec = &ctx->result.record;

    switch (ctx->result.outcome) {

    case IDEM_BEGIN_CLAIMED:
        ngx_http_idempotency_list_claim(ctx);
        ctx->owner = ctx->result.owner;
        ctx->expires_ms = rec->expires_ms;
        ctx->state = NGX_HTTP_IDEM_CLAIMED;
        ctx->outcome = NGX_HTTP_IDEM_OUT_EXECUTED;
        ngx_http_idempotency_count(NGX_HTTP_IDEM_M_EXECUTED, 1);
        ngx_http_idempotency_claim_started(ctx);
        return;

    case IDEM_BEGIN_REPLAY:
    case IDEM_BEGIN_STALE:
        ctx->outcome = NGX_HTTP_IDEM_OUT_REPLAYED;
        ngx_http_idempotency_count(NGX_HTTP_IDEM_M_REPLAYED, 1);

        if (ctx->result.outcome == IDEM_BEGIN_STALE) {
            ngx_http_idempotency_count(NGX_HTTP_IDEM_M_UNKNOWN_OUTCOME, 1);
        }

        ctx->answer.status = rec->response.status;
        ctx->answer.resp = rec->response;
        ctx->answer.flags = rec->flags;
        ctx->answer.replayed = 1;
        ctx->answer.expires_ms = rec->expires_ms;
        ctx->state = NGX_HTTP_IDEM_ANSWER;
        return;

    case IDEM_BEGIN_MISMATCH:
        ctx->outcome = NGX_HTTP_IDEM_OUT_MISMATCH;
        ctx->api_log = ctx->result.first_mismatch ? 1 : 0;
        ngx_http_idempotency_count(NGX_HTTP_IDEM_M_MISMATCH, 1);

        if (ngx_http_idempotency_error_answer(r, ctx, IDEM_ERR_MISMATCH, 0)
            != NGX_OK)
        {
            ctx->answer.status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return;

    case IDEM_BEGIN_IN_PROGRESS:
    default:
        now = ngx_current_msec;

        if (ctx->wait_deadline == 0) {
            ctx->wait_deadline = now + ilcf->wait;
            ctx->wait_step = 10;
            ngx_http_idempotency_count(NGX_HTTP_IDEM_M_WAITED, 1);
        }

        if ((ngx_msec_int_t) (ctx->wait_deadline - now) > 0) {
            ctx->state = NGX_HTTP_IDEM_WAITING;
            return;
        }

        ngx_http_idempotency_conflict(r, ctx, rec->lease_until_ms);
        return;
    }
}


/*
 * The wait is over and the first request still runs: 409 with a retry hint.
 * The hint is short (retrying SDKs ignore hints of a minute or more, and a
 * retry waits again by itself) and honest: never later than the first
 * request's lease ends, when its outcome is settled one way or another.
 */

#define NGX_HTTP_IDEMPOTENCY_RETRY_HINT_MS  2000


static void
ngx_http_idempotency_conflict(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, int64_t lease_until_ms)
{
    int64_t  now, hint;

    ctx->outcome = NGX_HTTP_IDEM_OUT_CONFLICT;
    ngx_http_idempotency_count(NGX_HTTP_IDEM_M_CONFLICT, 1);

    if (ngx_http_idempotency_error_answer(r, ctx, IDEM_ERR_IN_PROGRESS, 0)
        != NGX_OK)
    {
        ctx->answer.status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    now = ngx_http_idempotency_now_ms();
    hint = ngx_min(lease_until_ms - now, NGX_HTTP_IDEMPOTENCY_RETRY_HINT_MS);
    hint = ngx_max(hint, 100);

    ctx->answer.retry_after_ms = (ngx_uint_t) hint;
    ctx->answer.retry_after = (ngx_uint_t) (hint + 999) / 1000;
}


/* Answers from ctx->answer, or parks the request while it waits. */

static ngx_int_t
ngx_http_idempotency_answer_now(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    ngx_int_t   rc;
    ngx_msec_t  delay, left;

    switch (ctx->state) {

    case NGX_HTTP_IDEM_CLAIMED:
        return NGX_DECLINED;

    case NGX_HTTP_IDEM_WAITING:
        if (ctx->wait_event.timer_set) {
            /* already parked: an event of the connection woke us */
            return NGX_DONE;
        }

        if ((ngx_msec_int_t) (ctx->wait_deadline - ngx_current_msec) <= 0) {
            ngx_http_idempotency_conflict(r, ctx,
                ctx->has_result ? ctx->result.record.lease_until_ms : 0);
            break;
        }

        left = ctx->wait_deadline - ngx_current_msec;
        delay = ngx_min(ctx->wait_step, left);
        ctx->wait_step = ngx_min(ctx->wait_step * 2, 200);

        ctx->wait_event.handler = ngx_http_idempotency_wait_handler;
        ctx->wait_event.data = r;
        ctx->wait_event.log = r->connection->log;
        ngx_add_timer(&ctx->wait_event, delay);

        r->main->blocked++;
        return NGX_DONE;

    default:
        break;
    }

    ctx->state = NGX_HTTP_IDEM_DONE;

    rc = ngx_http_idempotency_send_answer(r, ctx);

    ngx_http_finalize_request(r, rc);
    return NGX_DONE;
}


static void
ngx_http_idempotency_wait_handler(ngx_event_t *ev)
{
    ngx_http_request_t                *r = ev->data;
    ngx_http_idempotency_ctx_t        *ctx;
    ngx_http_idempotency_main_conf_t  *imcf;

    ngx_connection_t                  *c = r->connection;

    ctx = ngx_http_idempotency_get_ctx(r);

    r->main->blocked--;

    if (c->error) {
        /* the client is gone (an HTTP/2 stream reset leaves r to us) */
        ctx->state = NGX_HTTP_IDEM_DONE;
        ngx_http_finalize_request(r, NGX_HTTP_CLIENT_CLOSED_REQUEST);
        ngx_http_run_posted_requests(c);
        return;
    }

    if (ctx->has_result) {
        idem_result_free(&ctx->result);
        ctx->has_result = 0;
    }

    /* a cheap read first: still running, or finished meanwhile */
    switch (ngx_http_idempotency_peek(r, ctx)) {

    case NGX_AGAIN:
        ngx_http_idempotency_apply_begin(r, ctx, 0);
        ngx_http_idempotency_resume(r);
        return;

    case NGX_OK:
        ngx_http_idempotency_resume(r);
        return;

    default:
        break;
    }

    ctx->state = NGX_HTTP_IDEM_BODY;

    imcf = ngx_http_get_module_main_conf(r, ngx_http_idempotency_module);

    if (ngx_http_idempotency_store_failed(imcf)
        || ngx_http_idempotency_post_begin(r, ctx, !ctx->fingerprinted)
           != NGX_OK)
    {
        ngx_http_idempotency_apply_begin(r, ctx, IDEM_EUNAVAIL);
        ngx_http_idempotency_resume(r);
    }
}


void
ngx_http_idempotency_resume(ngx_http_request_t *r)
{
    ngx_connection_t  *c = r->connection;

    ngx_http_set_log_request(c->log, r);

    r->write_event_handler(r);
    ngx_http_run_posted_requests(c);
}


/* configuration */

/*
 * Adds one idempotency_scope value to the array: compiled as a complex
 * value, and, when it is one variable alone, with that variable's index.
 */

static char *
ngx_http_idempotency_scope_add(ngx_conf_t *cf, ngx_array_t *scope,
    ngx_str_t *value)
{
    size_t                               i;
    u_char                               c;
    ngx_str_t                            name;
    ngx_http_compile_complex_value_t     ccv;
    ngx_http_idempotency_scope_value_t  *sv;

    sv = ngx_array_push(scope);
    if (sv == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
    ccv.cf = cf;
    ccv.value = value;
    ccv.complex_value = &sv->value;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    sv->index = NGX_ERROR;

    /* "$name" or "${name}" */
    name.data = value->data + 1;
    name.len = value->len - 1;

    if (value->len < 2 || value->data[0] != '$') {
        return NGX_CONF_OK;
    }

    if (name.data[0] == '{') {
        if (name.len < 3 || name.data[name.len - 1] != '}') {
            return NGX_CONF_OK;
        }

        name.data++;
        name.len -= 2;
    }

    for (i = 0; i < name.len; i++) {
        c = name.data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_'))
        {
            return NGX_CONF_OK;
        }
    }

    sv->index = ngx_http_get_variable_index(cf, &name);
    if (sv->index == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_idempotency_scope_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_idempotency_loc_conf_t *ilcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (ilcf->scope != NULL || ilcf->scope_none != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2
        && (ngx_strcmp(value[1].data, "none") == 0
            || ngx_strcmp(value[1].data, "off") == 0))
    {
        ilcf->scope_none = 1;
        return NGX_CONF_OK;
    }

    if (cf->args->nelts - 1 > 8) {
        return "takes at most 8 values";
    }

    ilcf->scope_none = 0;
    ilcf->scope = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                   sizeof(ngx_http_idempotency_scope_value_t));
    if (ilcf->scope == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {
        if (ngx_http_idempotency_scope_add(cf, ilcf->scope, &value[i])
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/*
 * The array a list directive appends to, at field (a loc conf's
 * ngx_array_t *, NGX_CONF_UNSET_PTR until set): made on first use, with
 * elements of size bytes. NULL when out of memory.
 */

static ngx_array_t *
ngx_http_idempotency_conf_array(ngx_conf_t *cf, char *field, size_t size)
{
    ngx_array_t  **a;

    a = (ngx_array_t **) field;

    if (*a == NGX_CONF_UNSET_PTR || *a == NULL) {
        *a = ngx_array_create(cf->pool, 4, size);
    }

    return *a;
}


/* A list of HTTP statuses, 200 to 599, added to an array of ngx_uint_t. */

static char *
ngx_http_idempotency_status_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_int_t      n;
    ngx_str_t     *value;
    ngx_uint_t     i, *s;
    ngx_array_t   *a;

    a = ngx_http_idempotency_conf_array(cf, (char *) conf + cmd->offset,
                                        sizeof(ngx_uint_t));
    if (a == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        n = ngx_atoi(value[i].data, value[i].len);

        if (n < 200 || n > 599) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid status \"%V\": a status from 200 to "
                               "599", &value[i]);
            return NGX_CONF_ERROR;
        }

        s = ngx_array_push(a);
        if (s == NULL) {
            return NGX_CONF_ERROR;
        }

        *s = (ngx_uint_t) n;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_idempotency_lowcase_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_str_t     *value, *s;
    ngx_uint_t     i;
    ngx_array_t   *a;

    a = ngx_http_idempotency_conf_array(cf, (char *) conf + cmd->offset,
                                        sizeof(ngx_str_t));
    if (a == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        s = ngx_array_push(a);
        if (s == NULL) {
            return NGX_CONF_ERROR;
        }

        *s = value[i];
        ngx_strlow(s->data, s->data, s->len);
    }

    return NGX_CONF_OK;
}


/* JSON Pointers and field names the fingerprint leaves out, checked as
 * libidem reads them, added to an array of idem_str_t. */

static char *
ngx_http_idempotency_fp_ignore_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_str_t     *value;
    ngx_uint_t     i;
    idem_str_t    *s;
    ngx_array_t   *a;

    a = ngx_http_idempotency_conf_array(cf, (char *) conf + cmd->offset,
                                        sizeof(idem_str_t));
    if (a == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        if (idem_fp_ignore_check((char *) value[i].data, value[i].len) != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid fingerprint ignore entry \"%V\": a "
                               "JSON Pointer (\"/a/0/b\", with '~' only in "
                               "\"~0\" and \"~1\") or a field name",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        s = ngx_array_push(a);
        if (s == NULL) {
            return NGX_CONF_ERROR;
        }

        s->data = (char *) value[i].data;
        s->len = value[i].len;
    }

    return NGX_CONF_OK;
}


/* The body of every gateway-made error of the location, from a file read
 * now (libidem's idem_errtpl_t says what it holds). */

static char *
ngx_http_idempotency_error_template_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_idempotency_loc_conf_t *ilcf = conf;

    int                  rc;
    char                 why[256];
    u_char              *text;
    size_t               size, done;
    ssize_t              n;
    ngx_fd_t             fd;
    ngx_str_t           *value, name;
    ngx_file_info_t      fi;
    idem_errtpl_t       *tpl;
    ngx_pool_cleanup_t  *cln;

    if (ilcf->error_template != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;
    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &name);
        return NGX_CONF_ERROR;
    }

    text = NULL;
    size = 0;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%V\" failed", &name);
        goto failed;
    }

    if (ngx_file_size(&fi) > IDEM_ERRTPL_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "error template \"%V\" is larger than %ui bytes",
                           &name, (ngx_uint_t) IDEM_ERRTPL_MAX);
        goto failed;
    }

    size = (size_t) ngx_file_size(&fi);

    text = ngx_pnalloc(cf->temp_pool, size ? size : 1);
    if (text == NULL) {
        goto failed;
    }

    for (done = 0; done < size; done += n) {
        n = ngx_read_fd(fd, text + done, size - done);

        if (n == -1) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                               ngx_read_fd_n " \"%V\" failed", &name);
            goto failed;
        }

        if (n == 0) {
            break;
        }
    }

    ngx_close_file(fd);
    fd = NGX_INVALID_FILE;

    rc = idem_errtpl_parse((char *) text, done, &tpl, why, sizeof(why));
    if (rc == IDEM_ENOMEM) {
        return NGX_CONF_ERROR;
    }

    if (rc != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid error template \"%V\": %s", &name, why);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        idem_errtpl_free(tpl);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_idempotency_error_template_free;
    cln->data = tpl;

    ilcf->error_template = tpl;

    return NGX_CONF_OK;

failed:

    if (fd != NGX_INVALID_FILE) {
        ngx_close_file(fd);
    }

    return NGX_CONF_ERROR;
}


static void
ngx_http_idempotency_error_template_free(void *data)
{
    idem_errtpl_free(data);
}


static char *
ngx_http_idempotency_location_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    char  *p = conf;

    ngx_flag_t                *fp;
    ngx_http_core_loc_conf_t  *clcf;

    fp = (ngx_flag_t *) (p + cmd->offset);
    *fp = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (cmd->offset == offsetof(ngx_http_idempotency_loc_conf_t, metrics)) {
        clcf->handler = ngx_http_idempotency_metrics_handler;

    } else if (cmd->offset
               == offsetof(ngx_http_idempotency_loc_conf_t, health))
    {
        clcf->handler = ngx_http_idempotency_health_handler;

    } else {
        clcf->handler = ngx_http_idempotency_admin_handler;
    }

    return NGX_CONF_OK;
}


/* A store URL the library would refuse is refused with its reason. */

static char *
ngx_http_idempotency_store_url_check(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t  *url = data;

    char        why[256];

    if (idem_store_url_check((char *) url->data, why, sizeof(why)) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid idempotency_store \"%V\": %s", url, why);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_idempotency_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_idempotency_main_conf_t  *imcf;

    imcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_idempotency_main_conf_t));
    if (imcf == NULL) {
        return NULL;
    }

    imcf->prune_interval = NGX_CONF_UNSET_MSEC;
    imcf->prune_budget = NGX_CONF_UNSET_UINT;

    return imcf;
}


static char *
ngx_http_idempotency_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_idempotency_main_conf_t *imcf = conf;

    ngx_conf_init_msec_value(imcf->prune_interval, 1000);
    ngx_conf_init_uint_value(imcf->prune_budget, 256);

    if (imcf->store_url.len == 0) {
        ngx_str_set(&imcf->store_url, "lmdb:/var/lib/nginx/idempotency");
    }

    if (imcf->thread_pool_name.len == 0) {
        ngx_str_set(&imcf->thread_pool_name, "default");
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_idempotency_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_idempotency_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_idempotency_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->methods = 0;
     *     conf->scope = NULL;
     */

    conf->enable = NGX_CONF_UNSET;
    conf->scope_none = NGX_CONF_UNSET;
    conf->ttl = NGX_CONF_UNSET_MSEC;
    conf->wait = NGX_CONF_UNSET_MSEC;
    conf->lease = NGX_CONF_UNSET_MSEC;
    conf->on_unknown = NGX_CONF_UNSET_UINT;
    conf->error_style = NGX_CONF_UNSET_UINT;
    conf->require_key = NGX_CONF_UNSET;
    conf->stream = NGX_CONF_UNSET_UINT;
    conf->max_response_size = NGX_CONF_UNSET_SIZE;
    conf->no_store_headers = NGX_CONF_UNSET_PTR;
    conf->key_headers = NGX_CONF_UNSET_PTR;
    conf->release_statuses = NGX_CONF_UNSET_PTR;
    conf->fp_ignore = NGX_CONF_UNSET_PTR;
    conf->error_template = NGX_CONF_UNSET_PTR;
    conf->fp_headers = NGX_CONF_UNSET_PTR;
    conf->metrics = NGX_CONF_UNSET;
    conf->admin = NGX_CONF_UNSET;
    conf->health = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_idempotency_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_idempotency_loc_conf_t *prev = parent;
    ngx_http_idempotency_loc_conf_t *conf = child;

    ngx_str_t                          *value;
    ngx_http_idempotency_main_conf_t   *imcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_bitmask_value(conf->methods, prev->methods,
                                 (NGX_CONF_BITMASK_SET|NGX_HTTP_POST));
    ngx_conf_merge_msec_value(conf->ttl, prev->ttl, 24 * 60 * 60 * 1000);
    ngx_conf_merge_msec_value(conf->wait, prev->wait, 10000);
    ngx_conf_merge_msec_value(conf->lease, prev->lease, 70000);
    ngx_conf_merge_uint_value(conf->on_unknown, prev->on_unknown,
                              IDEM_ON_UNKNOWN_STORE);
    ngx_conf_merge_uint_value(conf->error_style, prev->error_style,
                              IDEM_STYLE_PERSONA);
    ngx_conf_merge_value(conf->require_key, prev->require_key, 0);
    ngx_conf_merge_uint_value(conf->stream, prev->stream,
                              NGX_HTTP_IDEM_STREAM_AUTO);
    ngx_conf_merge_size_value(conf->max_response_size,
                              prev->max_response_size, 8 * 1024 * 1024);
    ngx_conf_merge_ptr_value(conf->no_store_headers, prev->no_store_headers,
                             NULL);
    ngx_conf_merge_ptr_value(conf->key_headers, prev->key_headers, NULL);
    ngx_conf_merge_ptr_value(conf->release_statuses, prev->release_statuses,
                             NULL);
    ngx_conf_merge_ptr_value(conf->fp_ignore, prev->fp_ignore, NULL);
    ngx_conf_merge_ptr_value(conf->error_template, prev->error_template,
                             NULL);
    ngx_conf_merge_ptr_value(conf->fp_headers, prev->fp_headers, NULL);
    ngx_conf_merge_value(conf->metrics, prev->metrics, 0);
    ngx_conf_merge_value(conf->admin, prev->admin, 0);
    ngx_conf_merge_value(conf->health, prev->health, 0);

    if (conf->scope_none == NGX_CONF_UNSET) {
        conf->scope_none = prev->scope_none;
        conf->scope = prev->scope;
    }

    if (conf->scope_none == NGX_CONF_UNSET) {
        /* the default scope: the Authorization header */
        conf->scope_none = 0;
        conf->scope = ngx_array_create(cf->pool, 1,
                                sizeof(ngx_http_idempotency_scope_value_t));
        value = ngx_palloc(cf->pool, sizeof(ngx_str_t));
        if (conf->scope == NULL || value == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_str_set(value, "$http_authorization");

        if (ngx_http_idempotency_scope_add(cf, conf->scope, value)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }

        if (prev->scope_none == NGX_CONF_UNSET) {
            prev->scope_none = 0;
            prev->scope = conf->scope;
        }
    }

    if (conf->enable) {
        if (conf->ttl == 0 || conf->lease == 0) {
            return "idempotency_ttl and idempotency_lease must be positive";
        }

        imcf = ngx_http_conf_get_module_main_conf(cf,
                                                  ngx_http_idempotency_module);
        imcf->enabled = 1;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_idempotency_init(ngx_conf_t *cf)
{
    ngx_str_t                          name;
    ngx_http_handler_pt               *h;
    ngx_http_core_main_conf_t         *cmcf;
    ngx_http_idempotency_main_conf_t  *imcf;

    imcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_idempotency_module);

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_idempotency_handler;

    name = imcf->thread_pool_name;
    imcf->thread_pool = ngx_thread_pool_add(cf, &name);
    if (imcf->thread_pool == NULL) {
        return NGX_ERROR;
    }

    ngx_str_set(&name, "request_id");
    imcf->request_id_index = ngx_http_get_variable_index(cf, &name);
    if (imcf->request_id_index == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (ngx_http_idempotency_metrics_init(cf) != NGX_OK
        || ngx_http_idempotency_health_init(cf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_idempotency_filter_init(cf);
}


static ngx_int_t
ngx_http_idempotency_init_process(ngx_cycle_t *cycle)
{
    ngx_http_idempotency_main_conf_t  *imcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    imcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_idempotency_module);
    if (imcf == NULL || !imcf->enabled) {
        return NGX_OK;
    }

    ngx_http_idempotency_metrics_init_process(cycle);

    /* LMDB must be opened after fork(); a failure is retried per request */
    (void) ngx_http_idempotency_store(imcf, cycle->log);

    imcf->prune_event.handler = ngx_http_idempotency_prune;
    imcf->prune_event.data = imcf;
    imcf->prune_event.log = cycle->log;
    imcf->prune_event.cancelable = 1;
    ngx_add_timer(&imcf->prune_event, imcf->prune_interval);

    imcf->watch_event.handler = ngx_http_idempotency_watch;
    imcf->watch_event.data = imcf;
    imcf->watch_event.log = cycle->log;
    imcf->watch_event.cancelable = 1;
    ngx_add_timer(&imcf->watch_event, 1000);

    return NGX_OK;
}


static void
ngx_http_idempotency_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_idempotency_drain(cycle);
}


/* variables */

static ngx_int_t
ngx_http_idempotency_key_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_idempotency_ctx_t  *ctx;

    ctx = ngx_http_idempotency_get_ctx(r->main);

    if (ctx == NULL || ctx->key_len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = ctx->key_len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = ctx->key;

    return NGX_OK;
}


static ngx_str_t  ngx_http_idempotency_outcomes[] = {
    ngx_string("bypass"),
    ngx_string("bypass"),
    ngx_string("executed"),
    ngx_string("replayed"),
    ngx_string("mismatch"),
    ngx_string("conflict"),
    ngx_string("invalid"),
    ngx_string("unavailable")
};


ngx_uint_t
ngx_http_idempotency_reached_upstream(ngx_http_request_t *r)
{
    ngx_uint_t                  i;
    ngx_http_upstream_t        *u;
    ngx_http_upstream_state_t  *state;

    /* a request in flight: its counters are filled in only at the end */
    u = r->upstream;

    if (u && (u->request_sent
              || (u->peer.connection && u->peer.connection->sent > 0)))
    {
        return 1;
    }

    if (r->upstream_states == NULL) {
        return 0;
    }

    state = r->upstream_states->elts;

    for (i = 0; i < r->upstream_states->nelts; i++) {
        if (state[i].bytes_sent > 0) {
            return 1;
        }
    }

    return 0;
}


static ngx_int_t
ngx_http_idempotency_outcome_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_uint_t                   o;
    ngx_http_idempotency_ctx_t  *ctx;

    ctx = ngx_http_idempotency_get_ctx(r->main);
    o = ctx ? ctx->outcome : NGX_HTTP_IDEM_OUT_BYPASS;

    v->len = ngx_http_idempotency_outcomes[o].len;
    v->data = ngx_http_idempotency_outcomes[o].data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* 1 when SPEC's API log wants the request: it reached the upstream, or it
 * was the first reuse of its key with other parameters */

static ngx_uint_t
ngx_http_idempotency_wants_log(ngx_http_request_t *r)
{
    ngx_http_idempotency_ctx_t  *ctx;

    ctx = ngx_http_idempotency_get_ctx(r->main);

    if (ctx != NULL) {
        switch (ctx->outcome) {
        case NGX_HTTP_IDEM_OUT_MISMATCH:
            return ctx->api_log;
        case NGX_HTTP_IDEM_OUT_EXECUTED:
            return ngx_http_idempotency_reached_upstream(r->main);
        case NGX_HTTP_IDEM_OUT_REPLAYED:
        case NGX_HTTP_IDEM_OUT_CONFLICT:
        case NGX_HTTP_IDEM_OUT_INVALID:
        case NGX_HTTP_IDEM_OUT_UNAVAILABLE:
            return 0;
        default:
            break;
        }
    }

    return ngx_http_idempotency_reached_upstream(r->main);
}


static ngx_int_t
ngx_http_idempotency_api_log_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    v->data = (u_char *) (ngx_http_idempotency_wants_log(r) ? "1" : "0");
    v->len = 1;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * The method and path the client sent, which the API log names. An
 * error_page turns r into a GET of the error location, so both come from
 * what that leaves alone: the request line (HTTP/2 builds one too) and the
 * raw target, whose path ends at the '?'.
 */

static void
ngx_http_idempotency_client_request(ngx_http_request_t *r, ngx_str_t *method,
    ngx_str_t *path)
{
    u_char  *p;

    *method = r->method_name;

    if (r->request_line.len) {
        p = ngx_strlchr(r->request_line.data,
                        r->request_line.data + r->request_line.len, ' ');
        if (p != NULL && p > r->request_line.data) {
            method->data = r->request_line.data;
            method->len = p - r->request_line.data;
        }
    }

    *path = r->unparsed_uri;

    p = ngx_strlchr(path->data, path->data + path->len, '?');
    if (p != NULL) {
        path->len = p - path->data;
    }
}


/*
 * $idempotency_log_entry: one JSON object for the API log, with every
 * string escaped (valid UTF-8 whatever the bytes of the path), so the
 * log_format needs no escaping of its own.
 */

static ngx_int_t
ngx_http_idempotency_log_entry_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                            *p;
    size_t                             len;
    time_t                             sec;
    ngx_str_t                          method, path;
    ngx_tm_t                           tm;
    ngx_uint_t                         o, status;
    ngx_time_t                        *tp;
    ngx_msec_int_t                     ms;
    ngx_http_variable_value_t         *rid;
    ngx_http_idempotency_ctx_t        *ctx;
    ngx_http_idempotency_main_conf_t  *imcf;

    imcf = ngx_http_get_module_main_conf(r, ngx_http_idempotency_module);
    ctx = ngx_http_idempotency_get_ctx(r->main);
    o = ctx ? ctx->outcome : NGX_HTTP_IDEM_OUT_BYPASS;

    rid = ngx_http_get_indexed_variable(r, imcf->request_id_index);

    tp = ngx_timeofday();
    sec = tp->sec;
    ngx_gmtime(sec, &tm);
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));
    ms = ngx_max(ms, 0);

    status = r->err_status ? r->err_status : r->headers_out.status;

    /*
     * a streamed response that ended short, or whose end could not be
     * stored: the client saw the upstream's status, the key keeps (or is
     * about to keep, by the request's cleanup) the unknown-outcome 504
     */
    if (ctx && ctx->streaming && !ctx->release
        && (ctx->state == NGX_HTTP_IDEM_STREAMING || ctx->fallback))
    {
        status = NGX_HTTP_GATEWAY_TIME_OUT;
    }

    ngx_http_idempotency_client_request(r->main, &method, &path);

    len = sizeof("{\"time\":\"2026-01-01T00:00:00.000Z\",\"request_id\":\"\","
                 "\"method\":\"\",\"path\":\"\",\"status\":999,\"key\":,"
                 "\"outcome\":\"idempotency_error\",\"duration_ms\":,"
                 "\"key_released\":true}") + 32
          + (rid && !rid->not_found ? rid->len : 0)
          + idem_json_escape(NULL, 0, (char *) method.data, method.len)
          + idem_json_escape(NULL, 0, (char *) path.data, path.len)
          + (ctx && ctx->key_len
             ? 2 + idem_json_escape(NULL, 0, (char *) ctx->key, ctx->key_len)
             : 4)
          + NGX_INT_T_LEN;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;

    p = ngx_sprintf(p, "{\"time\":\"%4d-%02d-%02dT%02d:%02d:%02d.%03MZ\"",
                    tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                    tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec,
                    tp->msec);
    p = ngx_sprintf(p, ",\"request_id\":\"%*s\"",
                    (size_t) (rid && !rid->not_found ? rid->len : 0),
                    rid ? rid->data : (u_char *) "");
    p = ngx_cpymem(p, ",\"method\":\"", sizeof(",\"method\":\"") - 1);
    p += idem_json_escape((char *) p, len, (char *) method.data, method.len);
    p = ngx_cpymem(p, "\",\"path\":\"", sizeof("\",\"path\":\"") - 1);
    p += idem_json_escape((char *) p, len, (char *) path.data, path.len);
    p = ngx_sprintf(p, "\",\"status\":%ui,\"key\":", status);

    if (ctx && ctx->key_len) {
        *p++ = '"';
        p += idem_json_escape((char *) p, len, (char *) ctx->key,
                              ctx->key_len);
        *p++ = '"';

    } else {
        p = ngx_cpymem(p, "null", 4);
    }

    p = ngx_sprintf(p, ",\"outcome\":\"%s\",\"duration_ms\":%M",
                    o == NGX_HTTP_IDEM_OUT_MISMATCH ? "idempotency_error"
                                                    : "executed",
                    (ngx_msec_t) ms);

    /* executed, answered, and not kept (idempotency_release_status) */
    if (ctx && ctx->released_by_status) {
        p = ngx_cpymem(p, ",\"key_released\":true",
                       sizeof(",\"key_released\":true") - 1);
    }

    *p++ = '}';

    v->len = p - v->data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_http_variable_t  ngx_http_idempotency_vars[] = {

    { ngx_string("idempotency_key"), NULL,
      ngx_http_idempotency_key_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("idempotency_outcome"), NULL,
      ngx_http_idempotency_outcome_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("idempotency_api_log"), NULL,
      ngx_http_idempotency_api_log_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("idempotency_log_entry"), NULL,
      ngx_http_idempotency_log_entry_variable, 0, NGX_HTTP_VAR_NOCACHEABLE,
      0 },

      ngx_http_null_variable
};


static ngx_int_t
ngx_http_idempotency_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_idempotency_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}
