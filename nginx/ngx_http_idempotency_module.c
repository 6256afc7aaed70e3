
/*
 * ngx_http_idempotency_module.c — the module itself: its directives, the
 * configuration they make (created, merged and checked here), and what it
 * sets up at configuration (the handler, the filters, the variables, the
 * shared zones) and in each worker (the store, the prune and watch timers).
 * The request's work is elsewhere: see ngx_http_idempotency.h.
 */

#include "ngx_http_idempotency.h"
#include "ngx_http_idempotency_admin.h"
#include "ngx_http_idempotency_ctx.h"
#include "ngx_http_idempotency_filter.h"
#include "ngx_http_idempotency_handler.h"
#include "ngx_http_idempotency_metrics.h"
#include "ngx_http_idempotency_request.h"
#include "ngx_http_idempotency_store.h"
#include "ngx_http_idempotency_task.h"
#include "ngx_http_idempotency_variables.h"


static char *ngx_http_idempotency_scope_add(ngx_conf_t *cf, ngx_array_t *scope,
    ngx_str_t *value);
static char *ngx_http_idempotency_scope_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_array_t *ngx_http_idempotency_conf_array(ngx_conf_t *cf,
    char *field, size_t size);
static char *ngx_http_idempotency_status_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_idempotency_lowcase_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_idempotency_fp_ignore_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_idempotency_read_file(ngx_conf_t *cf,
    ngx_str_t *name, u_char **text_out, size_t *len);
static char *ngx_http_idempotency_error_template_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static void ngx_http_idempotency_error_template_free(void *data);
static char *ngx_http_idempotency_location_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_idempotency_store_url_check(ngx_conf_t *cf, void *post,
    void *data);
static void *ngx_http_idempotency_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_idempotency_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_idempotency_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_idempotency_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_idempotency_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_idempotency_init_process(ngx_cycle_t *cycle);
static void ngx_http_idempotency_exit_process(ngx_cycle_t *cycle);


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

    { ngx_string("idempotency_fast_request_id"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_idempotency_main_conf_t, fast_request_id),
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
    ngx_http_idempotency_variables_add,    /* preconfiguration */
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


/* The whole of a small file (at most IDEM_ERRTPL_MAX bytes), in
 * cf->temp_pool; NGX_ERROR, said in the error log, when it cannot be. */

static ngx_int_t
ngx_http_idempotency_read_file(ngx_conf_t *cf, ngx_str_t *name,
    u_char **text_out, size_t *len)
{
    u_char           *text;
    size_t            size, done;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_file_info_t   fi;

    fd = ngx_open_file(name->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", name);
        return NGX_ERROR;
    }

    text = NULL;
    size = 0;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%V\" failed", name);
        goto failed;
    }

    if (ngx_file_size(&fi) > IDEM_ERRTPL_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "error template \"%V\" is larger than %ui bytes",
                           name, (ngx_uint_t) IDEM_ERRTPL_MAX);
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
                               ngx_read_fd_n " \"%V\" failed", name);
            goto failed;
        }

        if (n == 0) {
            break;
        }
    }

    ngx_close_file(fd);

    *text_out = text;
    *len = done;

    return NGX_OK;

failed:

    ngx_close_file(fd);

    return NGX_ERROR;
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
    size_t               done;
    ngx_str_t           *value, name;
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

    if (ngx_http_idempotency_read_file(cf, &name, &text, &done) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

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
        clcf->handler = ngx_http_idempotency_store_health_handler;

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
    imcf->fast_request_id = NGX_CONF_UNSET;

    return imcf;
}


static char *
ngx_http_idempotency_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_idempotency_main_conf_t *imcf = conf;

    ngx_conf_init_msec_value(imcf->prune_interval, 1000);
    ngx_conf_init_uint_value(imcf->prune_budget, 256);
    ngx_conf_init_value(imcf->fast_request_id, 0);

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
    ngx_http_idempotency_main_conf_t  *imcf;

    imcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_idempotency_module);

    if (ngx_http_idempotency_handler_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

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
        || ngx_http_idempotency_store_health_init(cf) != NGX_OK
        || ngx_http_idempotency_variables_request_id_init(cf) != NGX_OK
        || ngx_http_idempotency_task_init_turn(cf->log) != NGX_OK)
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
    ngx_http_idempotency_request_init_process(cycle->log);

    /* LMDB must be opened after fork(); a failure is retried per request */
    (void) ngx_http_idempotency_store(imcf, cycle->log);

    imcf->prune_event.handler = ngx_http_idempotency_task_prune;
    imcf->prune_event.data = imcf;
    imcf->prune_event.log = cycle->log;
    imcf->prune_event.cancelable = 1;
    ngx_add_timer(&imcf->prune_event, imcf->prune_interval);

    imcf->watch_event.handler = ngx_http_idempotency_store_watch;
    imcf->watch_event.data = imcf;
    imcf->watch_event.log = cycle->log;
    imcf->watch_event.cancelable = 1;
    ngx_add_timer(&imcf->watch_event, 1000);

    return NGX_OK;
}


static void
ngx_http_idempotency_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_idempotency_main_conf_t  *imcf;

    ngx_http_idempotency_task_hold();
    ngx_http_idempotency_ctx_settle_claims(cycle);
    ngx_http_idempotency_task_drain(cycle);
    ngx_http_idempotency_request_exit_process();

    /*
     * The store is closed last: the thread pool is stopped and nothing is
     * queued, and a store may run a thread of its own (the LMDB log's
     * checkpoints), which must not outlive this module's code.
     */
    if (cycle->conf_ctx == NULL
        || cycle->conf_ctx[ngx_http_module.index] == NULL)
    {
        return;
    }

    imcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_idempotency_module);
    if (imcf != NULL && imcf->store != NULL) {
        idem_store_close(imcf->store);
        imcf->store = NULL;
    }
}
