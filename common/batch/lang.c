#include "batch/lang.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/util.h"

struct message {
    const char *code;
    const char *pt;
    const char *en;
};

/* The seed's wording first (FASE 1 of the plan), then ours in the same voice. */
static const struct message messages[] = {
    {"images_not_array", "Campo \"images\" deve ser um array", "field \"images\" must be an array"},
    {"images_empty", "Lista de imagens vazia", "empty image list"},
    {"too_many_images", "Máximo %lld imagens por batch", "at most %lld images per batch"},
    {"user_id_required", "Campo \"userId\" obrigatório", "field \"userId\" is required"},
    {"unknown_type", "Tipo desconhecido: %s", "unknown type: %s"},
    {"batch_not_found", "Batch não encontrado", "batch not found"},
    {"create_failed", "Erro ao criar batch", "cannot create batch"},
    {"status_failed", "Erro ao consultar status", "cannot read batch status"},
    {"invalid_image", "Imagem %lld inválida: informe uma URL (texto ou {url, metadata})",
     "image %lld is invalid: give a URL (string or {url, metadata})"},
    {"invalid_url", "Imagem %lld: URL inválida", "image %lld: invalid URL"},
    {"url_too_long", "Imagem %lld: URL maior que %lld caracteres",
     "image %lld: URL longer than %lld characters"},
    {"insecure_url", "Imagem %lld: a URL deve usar https", "image %lld: the URL must use https"},
    {"private_url", "Imagem %lld: endereço privado, local ou de metadados não permitido",
     "image %lld: private, loopback, link-local or metadata addresses are not allowed"},
    {"invalid_metadata", "Imagem %lld: \"metadata\" deve ser um objeto",
     "image %lld: \"metadata\" must be an object"},
    {"invalid_user_id", "Campo \"userId\" inválido (texto de 1 a 128 caracteres)",
     "field \"userId\" is invalid (text of 1 to 128 characters)"},
    {"invalid_type", "Campo \"type\" deve ser um texto", "field \"type\" must be a string"},
    {"invalid_priority", "Campo \"priority\" deve ser high, normal ou low",
     "field \"priority\" must be high, normal or low"},
    {"invalid_webhook_url", "Campo \"webhookUrl\" inválido: %s",
     "field \"webhookUrl\" is invalid: %s"},
    {"invalid_options", "Campo \"options\" inválido: %s", "field \"options\" is invalid: %s"},
    {"invalid_dry_run", "Campo \"dryRun\" deve ser booleano", "field \"dryRun\" must be a boolean"},
    {"invalid_body", "O corpo deve ser um objeto JSON", "the body must be a JSON object"},
    {"malformed_json", "JSON malformado", "malformed JSON"},
    {"payload_too_large", "Corpo da requisição muito grande", "request body too large"},
    {"unsupported_media_type", "Content-Type deve ser application/json",
     "Content-Type must be application/json"},
    {"invalid_idempotency_key", "Cabeçalho Idempotency-Key inválido (1 a 128 caracteres visíveis)",
     "invalid Idempotency-Key header (1 to 128 visible characters)"},
    {"idempotency_key_reused", "Idempotency-Key já usada com outra requisição",
     "Idempotency-Key already used with a different request"},
    {"invalid_query", "Parâmetro de consulta inválido: %s", "invalid query parameter: %s"},
    {"batch_not_retryable", "Batch não pode ser reprocessado no estado %s",
     "batch cannot be retried while %s"},
    {"batch_not_cancellable", "Batch não pode ser cancelado no estado %s",
     "batch cannot be cancelled while %s"},
    {"not_found", "Recurso não encontrado", "not found"},
    {"method_not_allowed", "Método não permitido", "method not allowed"},
    {"enqueue_failed", "Erro ao enfileirar as imagens; tente novamente",
     "cannot enqueue the images; try again"},
    {"unavailable", "Serviço temporariamente indisponível; tente novamente",
     "service temporarily unavailable; try again"},
    {"api_key_required", "Chave de API obrigatória (Authorization: Bearer ou X-API-Key)",
     "API key required (Authorization: Bearer or X-API-Key)"},
    {"invalid_api_key", "Chave de API inválida ou desativada", "invalid or disabled API key"},
    {"user_mismatch", "Campo \"userId\" não corresponde à chave de API",
     "field \"userId\" does not match the API key"},
    {"rate_limited", "Limite de %s por minuto excedido; tente novamente em %lld s",
     "%s per minute limit exceeded; retry in %lld s"},
};

enum lang lang_from_header(const char *h)
{
    /* The first language range decides; only English is offered besides the default. */
    while (h && (*h == ' ' || *h == '\t'))
        h++;
    if (h && strncasecmp(h, "en", 2) == 0 &&
        (h[2] == '\0' || h[2] == '-' || h[2] == ',' || h[2] == ';' || h[2] == ' '))
        return LANG_EN;
    return LANG_PT;
}

static const struct message *find(const char *code)
{
    size_t i;

    for (i = 0; code && i < ARRAY_SIZE(messages); i++)
        if (strcmp(messages[i].code, code) == 0)
            return &messages[i];
    return NULL;
}

enum status lang_error(struct error *err, enum lang lang, enum status status, const char *code, ...)
{
    const struct message *m = find(code);
    va_list ap;

    if (!err)
        return status;
    error_set(err, status, code, "%s", code);
    if (m) {
        va_start(ap, code);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        vsnprintf(err->message, sizeof(err->message), lang == LANG_EN ? m->en : m->pt, ap);
#pragma GCC diagnostic pop
        va_end(ap);
    }
    return status;
}

void lang_localize(struct error *err, enum lang lang)
{
    const struct message *m = err ? find(error_code(err)) : NULL;

    char detail[ERROR_MSG_MAX];

    /* Only argument-free messages can be re-worded without their arguments. A parse
     * error keeps its position, which is worth more than the wording. */
    if (!m || strchr(m->pt, '%'))
        return;
    str_copy(detail, sizeof(detail), err->message);
    if (strcmp(m->code, "malformed_json") == 0)
        snprintf(err->message, sizeof(err->message), "%s (%.200s)", lang == LANG_EN ? m->en : m->pt,
                 detail);
    else
        str_copy(err->message, sizeof(err->message), lang == LANG_EN ? m->en : m->pt);
}
