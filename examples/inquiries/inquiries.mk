# inquiries.mk — builds the demo Inquiries API, included by the top Makefile.
#
# Uses the including Makefile's BUILD, CC, CFLAGS and LDFLAGS, so that
# `make SANITIZER=address` builds it under the sanitizer like the rest; it
# links only jansson.
#
#   make build/inquiries        (or `make inquiries`)

INQUIRIES_SRC := $(wildcard examples/inquiries/*.c)
INQUIRIES_HDR := $(wildcard examples/inquiries/*.h)
INQUIRIES_OBJ := $(INQUIRIES_SRC:%.c=$(BUILD)/%.o)
INQUIRIES_BIN := $(BUILD)/inquiries
INQUIRIES_CFLAGS := $(shell pkg-config --cflags jansson 2>/dev/null)
INQUIRIES_LIBS := $(shell pkg-config --libs jansson 2>/dev/null || echo -ljansson)

.PHONY: inquiries
inquiries: $(INQUIRIES_BIN)

$(INQUIRIES_OBJ): $(BUILD)/examples/inquiries/%.o: examples/inquiries/%.c \
                  $(INQUIRIES_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INQUIRIES_CFLAGS) -c -o $@ $<

$(INQUIRIES_BIN): $(INQUIRIES_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(INQUIRIES_LIBS)
