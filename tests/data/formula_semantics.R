# lme4 references for tests/test_formula_semantics.py: run from tests/data with Rscript formula_semantics.R
suppressMessages({library(lme4); library(jsonlite); library(splines)})
ss <- read.csv("sleepstudy.csv")
ss$Subject <- factor(ss$Subject)
fits <- list(
  power = lmer(Reaction ~ Days + I(Days^2) + (1 | Subject), ss),
  poly = lmer(Reaction ~ poly(Days, 2) + (1 | Subject), ss),
  scale = lmer(Reaction ~ scale(Days) + (1 | Subject), ss),
  bs = lmer(Reaction ~ bs(Days, df = 4) + (1 | Subject), ss),
  offset = {ss$t <- 2 + (seq_len(nrow(ss)) - 1) %% 3; lmer(Reaction ~ Days + offset(log(t)) + (1 | Subject), ss)},
  crossing = {ss$half <- factor(ifelse(ss$Days < 5, "early", "late")); ss$odd <- factor(ss$Days %% 2);
              lmer(Reaction ~ (half + odd)^2 + (1 | Subject), ss)}
)
out <- lapply(fits, function(m) list(fixef = as.list(fixef(m)), se = as.list(sqrt(diag(as.matrix(vcov(m))))),
                                      REML = unname(REMLcrit(m)), theta = unname(getME(m, "theta")),
                                      sigma = sigma(m)))
nd <- data.frame(Days = c(0, 4.5, 9, 12), Subject = factor("308", levels = levels(ss$Subject)), t = c(2, 3, 4, 2))
out$predict_poly <- unname(predict(fits$poly, newdata = nd, re.form = NA))
out$predict_bs <- unname(predict(fits$bs, newdata = nd[1:3, ], re.form = NA))
out$predict_scale <- unname(predict(fits$scale, newdata = nd, re.form = NA))
out$predict_offset <- unname(predict(fits$offset, newdata = nd, re.form = NA))
out$newdata <- nd[, c("Days", "t")]
write(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "sleepstudy_formula_semantics.json")
